// The queue layer's public pieces (re-exported by lib/index.ts): running work on BullMQ workers over Redis.
export { startQueueWorker } from './worker.js';
export type { QueueWorker, QueueWorkerOptions, WorkerInfo } from './worker.js';
export { runBatchOnQueue } from './batch.js';
export { generateOnQueue } from './generate.js';
export type { QueuedImages } from './generate.js';
export { runTimedOnQueue } from './timed.js';
export { queueStatus, cleanQueues } from './status.js';
export type { QueueStatus, QueueCounts } from './status.js';
export type { JobTimes, QueueTarget } from './submission.js';
export { checkConnection, redactUrl, resolveQueueUrl, REDIS_URL_VARIABLE } from './connection.js';
export { validateJob } from './payload.js';
export type { JobData, BatchJob, GenerateJob, TimedJob } from './payload.js';
export { QueueError, PayloadError } from './queue-error.js';
