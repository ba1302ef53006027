import { MemoryBackend } from '@mailroom/core';
import { ConnectionPool } from '@mailroom/worker';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';

const logger = pino({ level: 'silent' });

function pool(options: Partial<ConstructorParameters<typeof ConnectionPool>[1]> = {}) {
  const made: MemoryBackend[] = [];
  const connections = new ConnectionPool(
    () => {
      const backend = new MemoryBackend();
      made.push(backend);
      return backend;
    },
    { idleTimeout: 60_000, maxMessages: 100, maxIdle: 2, logger, ...options },
  );
  return { connections, made };
}

describe('ConnectionPool', () => {
  it('hands the next batch the connection the previous one left open', async () => {
    const { connections, made } = pool();
    const first = connections.acquire();
    await first.open();
    await connections.release(first, 10);
    expect(connections.acquire()).toBe(first);
    expect(made).toHaveLength(1);
    await connections.closeAll();
  });

  it('closes a connection that reached maxMessages instead of keeping it', async () => {
    const { connections } = pool({ maxMessages: 20 });
    const backend = connections.acquire();
    await backend.open();
    await connections.release(backend, 15);
    expect(connections.acquire()).toBe(backend);
    await connections.release(backend, 5);
    expect(backend.isOpen).toBe(false);
    expect(connections.acquire()).not.toBe(backend);
  });

  it('does not hand out a connection that was closed while idle, and keeps at most maxIdle', async () => {
    const { connections } = pool({ maxIdle: 1 });
    const [a, b] = [connections.acquire(), connections.acquire()];
    await a.open();
    await b.open();
    await connections.release(a, 1);
    await connections.release(b, 1);
    expect(b.isOpen).toBe(false);
    await a.close();
    expect(connections.acquire()).not.toBe(a);
  });

  it('closes idle connections after the idle timeout, and everything on closeAll', async () => {
    const { connections } = pool({ idleTimeout: 20 });
    const backend = connections.acquire();
    await backend.open();
    await connections.release(backend, 1);
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(backend.isOpen).toBe(false);
    const other = connections.acquire();
    await other.open();
    await connections.release(other, 1);
    await connections.closeAll();
    expect(other.isOpen).toBe(false);
  });

  it('cuts the connections batches are using on closeInUse, and keeps none released after it', async () => {
    const { connections } = pool();
    const [busy, idle] = [connections.acquire(), connections.acquire()];
    await busy.open();
    await idle.open();
    await connections.release(idle, 1);
    await connections.closeInUse();
    expect(busy.isOpen).toBe(false);
    // closeInUse cuts only what is in use; closeAll (which a shutdown runs next) the idle ones.
    expect(idle.isOpen).toBe(true);
    await busy.open();
    await connections.release(busy, 1);
    expect(busy.isOpen).toBe(false);
    await connections.closeAll();
    expect(idle.isOpen).toBe(false);
  });
});
