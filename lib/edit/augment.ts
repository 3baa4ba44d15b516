// The paper's prompt augmentations: the edit pair is repeated inside a few templates so that the edit also
// holds in context. As in the official code, a prompt starting with "A" (e.g. "A banana", "An apple") has
// that first letter lowered before it is put in a template.

export const DEFAULT_AUGMENTATIONS: readonly string[] = ['A photo of ', 'An image of ', 'A picture of '];

/** The prompt as it goes inside a template: a leading capital "A" lowered, everything else unchanged. */
export function lowerLeadingA(prompt: string): string {
  return prompt.startsWith('A') ? `a${prompt.slice(1)}` : prompt;
}

/** [prompt, template₁ + prompt', template₂ + prompt', …] with prompt' = lowerLeadingA(prompt). */
export function augmentPrompt(prompt: string, templates: readonly string[] = DEFAULT_AUGMENTATIONS): string[] {
  const inner = lowerLeadingA(prompt);
  return [prompt, ...templates.map((t) => t + inner)];
}

/** Source/destination pairs of one edit with its augmentations, in order (the pair itself first). */
export function augmentPair(
  source: string,
  destination: string,
  templates: readonly string[] = DEFAULT_AUGMENTATIONS,
): { source: string; destination: string }[] {
  const s = augmentPrompt(source, templates);
  const d = augmentPrompt(destination, templates);
  return s.map((src, i) => ({ source: src, destination: d[i]! }));
}
