// The shapes of the JSON configs in a diffusers pipeline folder that this project reads. They live with the model
// layer, which loads them; lib/sample interprets the scheduler's (so the model layer never imports lib/sample).

/** Where a pipeline folder keeps its scheduler config, relative to the folder (errors about it name this file). */
export const SCHEDULER_CONFIG_FILE = 'scheduler/scheduler_config.json';

/**
 * The fields of diffusers' scheduler_config.json that lib/sample/schedulers.ts reads (others are ignored).
 * Example: `{ _class_name: 'PNDMScheduler', num_train_timesteps: 1000, beta_schedule: 'scaled_linear' }`.
 */
export interface SchedulerConfig {
  _class_name?: string;
  num_train_timesteps?: number;
  beta_start?: number;
  beta_end?: number;
  beta_schedule?: string;
  trained_betas?: number[] | null;
  set_alpha_to_one?: boolean;
  steps_offset?: number;
  timestep_spacing?: string;
  clip_sample?: boolean;
  clip_sample_range?: number;
  prediction_type?: string;
}
