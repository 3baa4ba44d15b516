// Connections to the Redis server that carries the queue (BullMQ on ioredis). The URL is redis://[:password@]host:port[/db]
// or rediss:// for TLS; `env` stands for the TIME_EDIT_REDIS_URL environment variable, so the password need not appear
// on a command line. Three rules hold for every connection made here:
//   - the password is never printed: every message names the server by redactUrl(url);
//   - the first contact is checked at once (checkConnection) with no retries, so a wrong password, a wrong port or a
//     server that is down is one clear QueueError, not a hang (ioredis retries forever by default);
//   - later, a lost connection is retried for a bounded time (reconnectMs, default 60 s), enough for a Redis restart;
//     past that the connection ends and `onGiveUp` is told, so that the process stops with a message.
// See https://docs.bullmq.io/guide/connections and https://github.com/redis/ioredis#auto-reconnect.
import { Redis, type RedisOptions } from 'ioredis';
import { QueueError } from './queue-error.js';

/** The environment variable read when the URL is `env` (or when a command's --queue is not given). */
export const REDIS_URL_VARIABLE = 'TIME_EDIT_REDIS_URL';

/** How long a lost connection is retried before giving up, unless the caller says otherwise. */
export const DEFAULT_RECONNECT_MS = 60_000;

/**
 * The URL of `text`, with `env` (or undefined) read from TIME_EDIT_REDIS_URL; throws QueueError for anything that is
 * not a redis:// or rediss:// URL. Example: `resolveQueueUrl('redis://127.0.0.1:6379')`.
 */
export function resolveQueueUrl(text: string | undefined, env: NodeJS.ProcessEnv = process.env): string {
  const raw = text === undefined || text === 'env' ? env[REDIS_URL_VARIABLE] : text;
  if (raw === undefined || raw.trim() === '')
    throw new QueueError(`no queue URL: give redis://[:password@]host:port[/db] or set ${REDIS_URL_VARIABLE}`);
  let url: URL;
  try {
    url = new URL(raw.trim());
  } catch {
    throw new QueueError(`the queue URL ${redactUrl(raw)} is not a URL: expected redis://[:password@]host:port[/db]`);
  }
  if (url.protocol !== 'redis:' && url.protocol !== 'rediss:')
    throw new QueueError(`the queue URL ${redactUrl(raw)} must start with redis:// or rediss:// (TLS)`);
  if (url.hostname === '') throw new QueueError(`the queue URL ${redactUrl(raw)} names no host`);
  if (url.pathname !== '' && url.pathname !== '/' && !/^\/\d+$/.test(url.pathname))
    throw new QueueError(`the queue URL ${redactUrl(raw)}: the path must be a database number such as /0`);
  return raw.trim();
}

/**
 * `url` with its password (and user name) replaced by ***, for messages and logs; text that is no URL is shown as
 * `(queue URL)` with any user info cut out. Example: `redactUrl('redis://:s3cret@db:6379/0')` → `'redis://:***@db:6379/0'`.
 */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password !== '') u.password = '***';
    if (u.username !== '' && u.username !== 'default') u.username = '***';
    return u.toString().replace(/\/$/, '');
  } catch {
    return url.replace(/\/\/[^@/]*@/, '//***@');
  }
}

/** `text` with every occurrence of the URL's password replaced by ***: for error messages from ioredis. */
export function redactSecrets(text: string, url: string): string {
  let pw = '';
  try {
    pw = decodeURIComponent(new URL(url).password);
  } catch {
    // not a URL: nothing to hide beyond what redactUrl does
  }
  const out = pw.length > 0 ? text.split(pw).join('***') : text;
  return out.replace(/(rediss?:\/\/)[^@\s/]*@/g, '$1***@');
}

/** What a failed first contact means, in one line. */
function describeConnectFailure(err: unknown, url: string): string {
  const where = redactUrl(url);
  const msg = redactSecrets(err instanceof Error ? err.message : String(err), url);
  if (/WRONGPASS|invalid password|invalid username-password/i.test(msg))
    return `the Redis server at ${where} refused the password (check the URL or ${REDIS_URL_VARIABLE})`;
  if (/NOAUTH|Authentication required/i.test(msg))
    return `the Redis server at ${where} needs a password: give it in the URL (redis://:PASSWORD@host:port) or in ${REDIS_URL_VARIABLE}`;
  if (/ECONNREFUSED/.test(msg))
    return `cannot connect to the Redis server at ${where}: connection refused (is redis-server running there?)`;
  if (/ENOTFOUND|EAI_AGAIN/.test(msg)) return `cannot connect to the Redis server at ${where}: the host name is unknown`;
  if (/ETIMEDOUT|timed? ?out/i.test(msg)) return `cannot connect to the Redis server at ${where}: no answer in time`;
  return `cannot use the Redis server at ${where}: ${msg}`;
}

/**
 * Connects once, without retries, and runs PING: resolves when the server answers, else throws a QueueError with one
 * line saying why (refused password, no password, connection refused, unknown host, timeout).
 * Example: `await checkConnection('redis://127.0.0.1:6379')`.
 */
export async function checkConnection(url: string, timeoutMs = 5000): Promise<void> {
  const client = new Redis(url, {
    lazyConnect: true,
    maxRetriesPerRequest: 0,
    enableOfflineQueue: false,
    connectTimeout: timeoutMs,
    retryStrategy: () => null,
  });
  let last: unknown;
  client.on('error', (err: unknown) => {
    last = err;
  });
  try {
    await client.connect();
    await client.ping();
  } catch (err) {
    throw new QueueError(describeConnectFailure(last ?? err, url));
  } finally {
    client.disconnect();
  }
}

export interface ConnectionOptions {
  /** how long a lost connection is retried before giving up (default DEFAULT_RECONNECT_MS) */
  reconnectMs?: number;
  /** told once when the connection is lost and once when it gave up; messages are redacted */
  onTrouble?: (message: string) => void;
  /** told when reconnecting was given up (the connection has ended) */
  onGiveUp?: (error: QueueError) => void;
}

/**
 * A connection for BullMQ (maxRetriesPerRequest null, as BullMQ's workers need), retried for a bounded time after a
 * loss. Call checkConnection first: this one does not fail fast. Example:
 * `const conn = openConnection(url, { onGiveUp: (e) => { console.error(e.message); process.exit(1) } })`.
 */
export function openConnection(url: string, options: ConnectionOptions = {}): Redis {
  const limit = options.reconnectMs ?? DEFAULT_RECONNECT_MS;
  let lostAt: number | undefined;
  let gaveUp = false;
  const redisOptions: RedisOptions = {
    maxRetriesPerRequest: null,
    enableReadyCheck: true,
    retryStrategy: () => {
      lostAt ??= Date.now();
      if (Date.now() - lostAt > limit) {
        if (!gaveUp) {
          gaveUp = true;
          options.onGiveUp?.(
            new QueueError(`lost the connection to the Redis server at ${redactUrl(url)} for more than ${Math.round(limit / 1000)} s`),
          );
        }
        return null;
      }
      return 500;
    },
  };
  const client = new Redis(url, redisOptions);
  let reported = false;
  client.on('error', (err: unknown) => {
    if (reported) return;
    reported = true;
    options.onTrouble?.(
      `the connection to ${redactUrl(url)} failed (${redactSecrets(err instanceof Error ? err.message : String(err), url)}); retrying`,
    );
  });
  client.on('ready', () => {
    if (reported) options.onTrouble?.(`reconnected to ${redactUrl(url)}`);
    reported = false;
    lostAt = undefined;
  });
  return client;
}
