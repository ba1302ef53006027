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

/** The most jobs one bull-board page may list (its own default is 10). */
const MAX_JOBS_PER_PAGE = 100;

/**
 * The board over `queue`. Read-only (no retry, clean, pause, add, remove: bull-board refuses them),
 * and the dashboard only lets GET and HEAD through to it besides. Its express app is called with
 * the `/jobs` prefix taken off the URL, as express's own mounting does. A page of more than 100 jobs
 * is refused (400): bull-board would read them all, payloads included.
 */
export function createJobsBoard(queues: readonly Queue[]): JobsBoardHandler {
  // One board queue per shard; shard i > 0 is listed as `shard-i:<queue>`.
  const adapters = queues.map((queue, index) => {
    const adapter = new BullMQAdapter(queue, {
      readOnlyMode: true,
      allowRetries: false,
      ...(index === 0 ? {} : { prefix: `shard-${index}:` }),
    });
    adapter.setFormatter('data', redactJobData);
    adapter.setFormatter('returnValue', redactReturnValue);
    return adapter;
  });
  const serverAdapter = new ExpressAdapter();
  serverAdapter.setBasePath(JOBS_PATH);
  createBullBoard({
    queues: adapters,
    serverAdapter,
    // Nothing about the Redis host (version, OS, memory) or the workers' connections (CLIENT LIST).
    options: { uiConfig: { boardTitle: 'mailroom jobs', hideRedisDetails: true, showWorkers: false } },
  });
  const app = serverAdapter.getRouter() as (
    request: IncomingMessage,
    response: ServerResponse,
    next: (error?: unknown) => void,
  ) => void;
  return (request, response, notFound) => {
    const url = request.url ?? '/';
    request.url = url.slice(JOBS_PATH.length) || '/';
    // bull-board reads as many jobs as a page asks for, payloads included: a bounded page only.
    const perPage = new URL(request.url, 'http://board.invalid').searchParams.get('jobsPerPage');
    if (perPage !== null && !(Number(perPage) >= 1 && Number(perPage) <= MAX_JOBS_PER_PAGE)) {
      response.writeHead(400, { 'content-type': 'text/plain; charset=utf-8' });
      response.end(`jobsPerPage must be 1 to ${MAX_JOBS_PER_PAGE}.\n`);
      return;
    }
    app(request, response, (error) => {
      if (!error) return notFound();
      // MUST answer: every request gets one (a bad percent-encoding, a bull-board failure).
      if (response.headersSent) return response.destroy();
      const status = Number((error as { status?: unknown }).status) || 500;
      response.writeHead(status >= 400 && status < 600 ? status : 500, {
        'content-type': 'text/plain; charset=utf-8',
      });
      response.end(status < 500 ? 'Bad request.\n' : 'The job board failed.\n');
    });
  };
}
