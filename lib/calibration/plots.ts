/** The two pictures of a calibration, as self-contained SVG files. */

import type { Bin, RiskCoverage } from './metrics.js';

const W = 420;
const H = 420;
const M = 50; // margin for axes and labels
const x = (v: number): number => M + v * (W - 2 * M);
const y = (v: number): number => H - M - v * (H - 2 * M);

function frame(title: string, xLabel: string, yLabel: string, body: string): string {
  const ticks = [0, 0.25, 0.5, 0.75, 1]
    .map(
      (t) =>
        `<text x="${x(t)}" y="${H - M + 16}" text-anchor="middle">${t}</text>` +
        `<text x="${M - 8}" y="${y(t) + 4}" text-anchor="end">${t}</text>`,
    )
    .join('');
  return (
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="11">` +
    `<rect width="${W}" height="${H}" fill="white"/>` +
    `<text x="${W / 2}" y="20" text-anchor="middle" font-size="13">${title}</text>` +
    `<rect x="${M}" y="${M}" width="${W - 2 * M}" height="${H - 2 * M}" fill="none" stroke="#888"/>` +
    ticks +
    `<text x="${W / 2}" y="${H - 12}" text-anchor="middle">${xLabel}</text>` +
    `<text x="14" y="${H / 2}" text-anchor="middle" transform="rotate(-90 14 ${H / 2})">${yLabel}</text>` +
    body +
    `</svg>\n`
  );
}

/** Accuracy per confidence bin, before (grey) and after (blue) temperature scaling and the confidence map. */
export function reliabilitySvg(before: Bin[], after: Bin[], temperature: number): string {
  const bars = (bins: Bin[], color: string, offset: number): string =>
    bins
      .filter((b) => b.count > 0)
      .map((b) => {
        const w = (x(b.upper) - x(b.lower)) / 2;
        return `<rect x="${x(b.lower) + offset * w}" y="${y(b.accuracy)}" width="${w}" height="${y(0) - y(b.accuracy)}" fill="${color}" opacity="0.8"/>`;
      })
      .join('');
  const body =
    bars(before, '#bbbbbb', 0) +
    bars(after, '#3b6fb6', 1) +
    `<line x1="${x(0)}" y1="${y(0)}" x2="${x(1)}" y2="${y(1)}" stroke="#c33" stroke-dasharray="4 3"/>` +
    `<text x="${M + 8}" y="${M + 16}" fill="#777">before (T = 1)</text>` +
    `<text x="${M + 8}" y="${M + 30}" fill="#3b6fb6">after (T = ${temperature.toFixed(3)}, then the map)</text>`;
  return frame('Reliability (15 equal-width bins)', 'confidence (max probability)', 'accuracy', body);
}

/** Selective risk against coverage, with the chosen threshold marked. */
export function riskCoverageSvg(curve: RiskCoverage, chosen?: { coverage: number; risk: number }): string {
  const top = Math.max(0.05, ...curve.risk);
  const points: string[] = [];
  const step = Math.max(1, Math.floor(curve.coverage.length / 400));
  for (let i = 0; i < curve.coverage.length; i += step) {
    points.push(`${x(curve.coverage[i] as number).toFixed(1)},${y((curve.risk[i] as number) / top).toFixed(1)}`);
  }
  const mark = chosen
    ? `<circle cx="${x(chosen.coverage)}" cy="${y(chosen.risk / top)}" r="4" fill="#c33"/>` +
      `<text x="${x(chosen.coverage) - 6}" y="${y(chosen.risk / top) - 8}" text-anchor="end">threshold</text>`
    : '';
  const body =
    `<polyline points="${points.join(' ')}" fill="none" stroke="#3b6fb6" stroke-width="2"/>` +
    mark +
    `<text x="${M + 8}" y="${M + 16}">AURC ${curve.aurc.toFixed(4)}, E-AURC ${curve.eAurc.toFixed(4)}; risk axis to ${top.toFixed(3)}</text>`;
  return frame('Risk–coverage', 'coverage', `selective risk (x ${top.toFixed(3)})`, body);
}
