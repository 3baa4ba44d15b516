// The errors of the queue layer: a Redis server that cannot be reached or refuses the password, a connection lost for
// longer than the reconnect bound, no live worker for a model, and a job payload that fails validation. Messages name
// the server by its redacted URL (lib/queue/connection.ts redactUrl): a password is never part of a message.
import { TimeEditError } from '../errors.js';

/**
 * The queue could not do its work: Redis unreachable, a password refused, no worker serving a model in time.
 * Example: `try { await checkConnection(url) } catch (err) { if (err instanceof QueueError) console.error(err.message) }`.
 */
export class QueueError extends TimeEditError {
  override readonly name = 'QueueError';
}

/**
 * A job payload that is not what this tool submits (a missing or unexpected field, a value out of range): such a job
 * is failed with this message and never executed. Example: `validateJob({ kind: 'batch', model: '/etc' }, fp)` throws it.
 */
export class PayloadError extends TimeEditError {
  override readonly name = 'PayloadError';
}
