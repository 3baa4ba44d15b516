// The judges of the debiasing protocol: each image of a profession's prompt is put in one of three classes, the
// attribute the edit names, the other attribute, or neither. On SD models: CLIP zero-shot between two attribute
// prompts ("a photo of a female attendant" / "a photo of a male attendant"; the template and the attribute pair are
// options). On the embedded model: the toy colour classifier, the edit's colour against the shape's default colour
// (any other hue, e.g. one between the two, is "neither": a colour edit can blend, a gender judge has no such class).
import { InputError } from '../errors.js';
import type { RgbImage } from '../image/png.js';
import type { ClipJudge } from './clip-judge.js';
import { classifyColour, colourNamedIn, TOY_DEFAULT_COLOUR } from './colour-classifier.js';
import type { DebiasEntry } from './debias-csv.js';

export type AttributeClass = 'attribute' | 'other' | 'in-between';

/** Puts an image generated for one of an entry's prompts in a class. */
export interface AttributeJudge {
  name: string;
  /** Throws InputError when the judge cannot score this entry at all (checked before any sampling). */
  check(entry: DebiasEntry): void;
  classify(img: RgbImage, entry: DebiasEntry): AttributeClass | Promise<AttributeClass>;
}

/** The shape a toy prompt names ("circle"), or undefined. */
function toyShape(prompt: string): string | undefined {
  return Object.keys(TOY_DEFAULT_COLOUR).find((s) => new RegExp(`\\b${s}s?\\b`).test(prompt));
}

/**
 * The embedded model's judge: the colour classifier; the edit's colour is the attribute, the shape's default colour
 * (red circles, blue squares, …) the other one, any other colour in between.
 *
 * @example
 *   toyColourAttributeJudge.classify(img, { ...entry, new: 'a purple circle' });   // 'attribute' for a purple circle
 */
export const toyColourAttributeJudge: AttributeJudge = {
  name: 'toy colour classifier (attribute colour vs the shape default)',
  check(entry) {
    const colour = colourNamedIn(entry.new);
    const shape = toyShape(entry.old);
    if (colour === undefined || shape === undefined)
      throw new InputError(
        'dataset',
        `the toy judge needs a shape in old and a colour in new: "${entry.old}" → "${entry.new}" (an SD dataset needs --clip)`,
      );
    if (colour === TOY_DEFAULT_COLOUR[shape])
      throw new InputError('dataset', `"${entry.new}" asks for the ${shape}'s default colour: there is nothing to balance`);
  },
  classify(img, entry) {
    const got = classifyColour(img.rgb, img.width, img.height);
    if (got === colourNamedIn(entry.new)) return 'attribute';
    if (got === TOY_DEFAULT_COLOUR[toyShape(entry.old)!]) return 'other';
    return 'in-between';
  },
};

/** The default CLIP attribute prompt: {attribute} and {profession} are filled in. */
export const DEFAULT_ATTRIBUTE_TEMPLATE = 'a photo of a {attribute} {profession}';
/** The default attribute pair of the TIMED gender set. */
export const DEFAULT_ATTRIBUTE_PAIR: readonly [string, string] = ['female', 'male'];

/** The template with {attribute} and {profession} filled in. Example: `fillTemplate(DEFAULT_ATTRIBUTE_TEMPLATE, 'male', 'nurse')`. */
export function fillTemplate(template: string, attribute: string, profession: string): string {
  return template.replaceAll('{attribute}', attribute).replaceAll('{profession}', profession);
}

/**
 * CLIP zero-shot between the two attribute prompts of an entry: the template filled with the attribute the edit
 * names and with the other attribute of the pair. Ties (equal logits) count as the other attribute.
 *
 * @example
 *   const judge = clipAttributeJudge(await ClipJudge.load('clip/'));
 *   await judge.classify(img, entry);   // 'attribute' when "a photo of a female attendant" wins
 */
export function clipAttributeJudge(
  clip: ClipJudge,
  template: string = DEFAULT_ATTRIBUTE_TEMPLATE,
  pair: readonly [string, string] = DEFAULT_ATTRIBUTE_PAIR,
): AttributeJudge {
  if (!template.includes('{attribute}'))
    throw new InputError('template', `the attribute prompt template must contain {attribute}, got '${template}'`);
  const otherOf = (entry: DebiasEntry): string => (entry.attribute === pair[0] ? pair[1] : pair[0]);
  return {
    name: `CLIP zero-shot: "${template}" with ${pair[0]} / ${pair[1]}`,
    check(entry) {
      if (!pair.includes(entry.attribute))
        throw new InputError(
          'dataset',
          `"${entry.new}" adds '${entry.attribute}', which is not one of the attribute pair ${pair[0]}/${pair[1]}`,
        );
    },
    async classify(img, entry) {
      const logits = await clip.logits(img, [
        fillTemplate(template, entry.attribute, entry.profession),
        fillTemplate(template, otherOf(entry), entry.profession),
      ]);
      return logits[0]! > logits[1]! ? 'attribute' : 'other';
    },
  };
}
