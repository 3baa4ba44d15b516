// Where the embedded model lives: models/toy-shapes of this package, resolved from the installed package (not the
// working directory), so `time-edit generate` works from any folder.
import { fileURLToPath } from 'node:url';

export const defaultModelDir = fileURLToPath(new URL('../../models/toy-shapes', import.meta.url));
