// File names made from prompts: `generate` names its PNGs after the prompt and `eval timed` its image folders and
// files, so a reader finds an image by its text. Each caller keeps its own length (60 and 50 characters): changing
// either would rename the files of existing output folders (and break a resumed `eval timed` run's reuse of them).

/**
 * A prompt as a file-name part: lower case, every run of characters other than a-z and 0-9 turned into one '-',
 * no '-' at either end, cut to `maxLength` characters; 'empty' when nothing is left.
 * Example: `promptSlug('A purple circle!', 60)` → `'a-purple-circle'`.
 */
export function promptSlug(prompt: string, maxLength: number): string {
  const s = prompt
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, '-')
    .replace(/^-+|-+$/g, '')
    .slice(0, maxLength);
  return s === '' ? 'empty' : s;
}
