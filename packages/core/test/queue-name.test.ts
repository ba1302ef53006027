import { ConfigError, QUEUE_NAME_RULE, validateQueueName } from '@mailroom/core';
import { describe, expect, it } from 'vitest';

describe('validateQueueName', () => {
  it.each(['mail', 'news-2026', 'a.b_c-D9', 'x', 'q'.repeat(100)])('accepts %j and returns it', (name) => {
    expect(validateQueueName(name)).toBe(name);
  });

  it.each([
    ['', 'empty'],
    ['x:y', "':' separates the parts of Redis keys; BullMQ refuses it"],
    ['mail*', 'a SCAN pattern character'],
    ['a[1]', 'SCAN pattern characters'],
    ['{mail}', 'a Redis Cluster hash tag'],
    ['mail queue', 'CLIENT SETNAME refuses spaces'],
    ['tab\there', 'a control character'],
    ['courrier-é', 'non-ASCII'],
    ['q'.repeat(101), 'over 100 characters'],
  ])('refuses %j (%s) with a ConfigError that shows it and the rule', (name) => {
    expect(() => validateQueueName(name)).toThrow(ConfigError);
    expect(() => validateQueueName(name)).toThrow(
      `Invalid queue name ${JSON.stringify(name)}: ${QUEUE_NAME_RULE}`,
    );
  });

  it.each([undefined, null, 42])('refuses %j, which is not a string', (name) => {
    expect(() => validateQueueName(name)).toThrow(`Invalid queue name ${String(name)}: ${QUEUE_NAME_RULE}`);
  });

  it('names the setting the value came from', () => {
    expect(() => validateQueueName('x:y', 'MAILROOM_QUEUE')).toThrow(
      `Invalid MAILROOM_QUEUE="x:y": ${QUEUE_NAME_RULE}`,
    );
  });
});
