/**
 * `/jobs/`: bull-board (a well-kept BullMQ board) for job-level views, read-only, with every job's
 * data cut down to `{count, campaign, enqueuedAt}` so no message (body, attachments) ever shows.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createBullBoard } from '@bull-board/api';
import { BullMQAdapter } from '@bull-board/api/bullMQAdapter';
import { ExpressAdapter } from '@bull-board/express';
import type { Queue } from 'bullmq';

/** Where the board is mounted. */
export const JOBS_PATH = '/jobs';

/** What a job's data shows on the board: the batch's size, campaign and enqueue time, never its messages. */
export function redactJobData(data: unknown): { count?: unknown; campaign?: unknown; enqueuedAt?: unknown } {
  if (typeof data !== 'object' || data === null) return {};
  const { count, campaign, enqueuedAt } = data as Record<string, unknown>;
  return { count, campaign, enqueuedAt };
}

/** A job's return value on the board: the worker's counts (numbers), nothing else. */
function redactReturnValue(value: unknown): Record<string, number> | null {
  if (typeof value !== 'object' || value === null) return null;
  return Object.fromEntries(
    Object.entries(value as Record<string, unknown>).filter(
      (entry): entry is [string, number] => typeof entry[1] === 'number',
    ),
  );
}

/** A node request handler serving the board for requests whose path starts with `/jobs/`. */
export type JobsBoardHandler = (
  request: IncomingMessage,
  response: ServerResponse,
  notFound: () => void,
) => void;

/**
 * The board over `queue`. Read-only (no retry, clean, pause, add, remove: bull-board refuses them),
 * and the dashboard only lets GET and HEAD through to it besides. Its express app is called with
 * the `/jobs` prefix taken off the URL, as express's own mounting does.
 */
export function createJobsBoard(queue: Queue): JobsBoardHandler {
  const adapter = new BullMQAdapter(queue, { readOnlyMode: true, allowRetries: false });
  adapter.setFormatter('data', redactJobData);
  adapter.setFormatter('returnValue', redactReturnValue);
  const serverAdapter = new ExpressAdapter();
  serverAdapter.setBasePath(JOBS_PATH);
  createBullBoard({
    queues: [adapter],
    serverAdapter,
    options: { uiConfig: { boardTitle: 'mailroom jobs' } },
  });
  const app = serverAdapter.getRouter() as (
    request: IncomingMessage,
    response: ServerResponse,
    next: (error?: unknown) => void,
  ) => void;
  return (request, response, notFound) => {
    const url = request.url ?? '/';
    request.url = url.slice(JOBS_PATH.length) || '/';
    app(request, response, (error) => {
      if (error) response.destroy(error instanceof Error ? error : undefined);
      else notFound();
    });
  };
}
