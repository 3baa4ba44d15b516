// `time-edit bench <what>`: each benchmark lives in lib/bench/ and is loaded only when asked for.
import { inTermsOfFlags, UsageError, type OptionFlags } from '../../errors.js';

export const summary =
  'benchmarks: bench solve (native TIME solver), bench generate (sampling speed; --memory: peak RSS per setting), bench queue (Redis queue overhead, scaling, worker memory)';

const benches: Record<string, () => Promise<{ run(args: string[]): Promise<void>; optionFlags?: OptionFlags }>> = {
  solve: () => import('./solve.js'),
  generate: () => import('./generate.js'),
  queue: () => import('./queue.js'),
  lora: () => import('./lora.js'),
  'save-checkpoint': () => import('./save-checkpoint.js'),
};

export async function run(args: string[]): Promise<void> {
  const [what, ...rest] = args;
  if (what === undefined || what === '--help' || what === '-h') {
    console.log(`usage: time-edit bench <${Object.keys(benches).join('|')}> [options]   (--help on each)`);
    return;
  }
  const load = benches[what];
  if (load === undefined) throw new UsageError(`unknown benchmark '${what}'; choose one of: ${Object.keys(benches).join(', ')}`);
  const bench = await load();
  try {
    await bench.run(rest);
  } catch (err) {
    throw inTermsOfFlags(err, bench.optionFlags);
  }
}
