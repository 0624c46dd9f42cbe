/**
 * Whose rule applies: the caller's options against the bundle's calibration. The one place
 * that decides the temperature, the confidence map, the threshold of every label, and whether
 * calibration.json's guarantee still describes what is served.
 *
 * The guarantee was computed for one rule: the calibrated temperature, map, per-label
 * thresholds and gate. It is reported only while the rule in force is that rule, label by
 * label; a caller's option that changes any of it leaves a rule with no guarantee of its own.
 */

import type { Bundle } from './bundle.js';
import type { Gate } from './calibration/file.js';
import type { ConfidenceMap } from './confidence-map.js';
import { InvalidArgumentError } from './errors.js';
import { DEFAULTS } from './options.js';

/** What the caller asked for that bears on the rule (options.ts checked each value). */
export interface CallerRule {
  threshold: number | undefined;
  thresholds: ReadonlyMap<string, number>;
  temperature: number | undefined;
}

export interface Rule {
  temperature: number;
  /** The confidence map the thresholds apply through, if any. */
  map: ConfidenceMap | undefined;
  /** The threshold of every label the rule names none for. */
  threshold: number;
  /** By label index; null: that label is never accepted. */
  thresholds: (number | null)[];
  /** calibration.json's guarantee, where the rule in force is the calibrated one; else undefined. */
  guarantee: Readonly<Record<string, unknown>> | undefined;
}

/**
 * The rule in force for a bundle, the caller's options and the gate in force (undefined: none,
 * or turned off).
 */
export function resolveRule(caller: CallerRule, bundle: Bundle, gate: Gate | undefined): Rule {
  const calibration = bundle.calibration ?? {};
  for (const label of caller.thresholds.keys()) {
    if (!bundle.labels.includes(label)) {
      throw new InvalidArgumentError(
        `Unknown label ${JSON.stringify(label)} in the "thresholds" option; the model's labels are ${JSON.stringify(bundle.labels)}`,
      );
    }
  }
  // A calibration.json without a temperature was fitted at the default one.
  const calibratedTemperature = calibration.temperature ?? DEFAULTS.temperature;
  const ownTemperature = caller.temperature !== undefined && caller.temperature !== calibratedTemperature;
  // Calibrated thresholds were chosen on the confidence at the calibration's temperature; at
  // another they would cut a different scale and certify nothing. So a temperature of one's
  // own comes with a threshold of one's own, never silently with the calibrated one.
  if (ownTemperature && caller.threshold === undefined) {
    if (calibration.threshold !== undefined || (calibration.thresholds?.size ?? 0) > 0) {
      throw new InvalidArgumentError(
        `The "temperature" option (${caller.temperature}) differs from the calibration's ` +
          `(${calibratedTemperature}), whose thresholds and guarantee hold at that temperature only: ` +
          'pass a "threshold" with it (the calibrated per-label thresholds and guarantee are then dropped), ' +
          'or leave the temperature to calibration.json',
      );
    }
  }
  const threshold = caller.threshold ?? calibration.threshold ?? DEFAULTS.threshold;
  // A threshold of the caller's other than the calibrated one applies to every label the caller
  // does not name, the ones calibration certified per label included: it replaces the
  // calibrated rule. One equal to it (info.threshold passed back, say) changes nothing.
  const calibratedLabels =
    ownTemperature || (caller.threshold !== undefined && caller.threshold !== calibration.threshold)
      ? new Map<string, number | null>()
      : (calibration.thresholds ?? new Map<string, number | null>());
  const thresholds = bundle.labels.map((label) => {
    const own = caller.thresholds.get(label);
    if (own !== undefined) return own;
    const calibrated = calibratedLabels.get(label);
    return calibrated === undefined ? threshold : calibrated;
  });
  const calibratedRule = bundle.labels.map((label) => {
    const calibrated = calibration.thresholds?.get(label);
    return calibrated === undefined ? (calibration.threshold ?? DEFAULTS.threshold) : calibrated;
  });
  const asCalibrated =
    !ownTemperature &&
    // The guarantee is the combined rule's (gate, then thresholds): without the gate it is another.
    (calibration.gate === undefined || gate !== undefined) &&
    thresholds.every((t, i) => t === calibratedRule[i]);
  return {
    temperature: caller.temperature ?? calibration.temperature ?? DEFAULTS.temperature,
    map: ownTemperature ? undefined : calibration.map,
    threshold,
    thresholds,
    guarantee: asCalibrated ? calibration.guarantee : undefined,
  };
}
