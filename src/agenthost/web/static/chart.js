// A small line chart drawn as SVG: one line per series over a time window, a y axis from 0
// to the largest value, a legend beside it. drawChart(svg, legend, series, options); each
// series is {name, colour, points: [[seconds since epoch, value or null], ...]}. The SVG
// gets data-max (the largest value drawn) and data-points (how many), for scripts and tests.
'use strict';

const CHART_COLOURS = ['#0b57d0', '#b3261e', '#146c2e', '#7a4b00', '#6f2da8', '#00677f',
                       '#9c4221', '#3d5a80'];
const SVG_NS = 'http://www.w3.org/2000/svg';

function svgElement(name, attributes) {
  const element = document.createElementNS(SVG_NS, name);
  for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, value);
  return element;
}

function niceMax(value) {
  if (!(value > 0)) return 1;
  const power = Math.pow(10, Math.floor(Math.log10(value)));
  for (const step of [1, 2, 2.5, 5, 10]) {
    if (value <= step * power) return step * power;
  }
  return 10 * power;
}

function formatValue(value) {
  if (value === 0) return '0';
  if (Math.abs(value) >= 100) return value.toFixed(0);
  if (Math.abs(value) >= 1) return value.toFixed(1);
  return value.toPrecision(2);
}

function drawChart(svg, legend, series, options) {
  const width = 400, height = 160, left = 44, right = 8, top = 8, bottom = 20;
  const now = options.now, windowS = options.windowS;
  svg.setAttribute('viewBox', '0 0 ' + width + ' ' + height);
  svg.setAttribute('preserveAspectRatio', 'none');
  svg.replaceChildren();
  let max = 0, points = 0;
  for (const s of series) {
    for (const [t, v] of s.points) {
      if (v !== null && t >= now - windowS) { max = Math.max(max, v); points += 1; }
    }
  }
  const top_value = niceMax(max);
  const x = (t) => left + (width - left - right) * (1 - (now - t) / windowS);
  const y = (v) => top + (height - top - bottom) * (1 - v / top_value);
  for (const fraction of [0, 0.5, 1]) {
    const value = top_value * fraction;
    svg.append(svgElement('line', {x1: left, x2: width - right, y1: y(value), y2: y(value),
                                   stroke: '#c9ccd3', 'stroke-width': 1}));
    const label = svgElement('text', {x: left - 4, y: y(value) + 4, 'text-anchor': 'end'});
    label.textContent = formatValue(value);
    svg.append(label);
  }
  const ago = svgElement('text', {x: left, y: height - 4});
  ago.textContent = '-' + Math.round(windowS / 60) + ' min';
  svg.append(ago);
  const nowLabel = svgElement('text', {x: width - right, y: height - 4, 'text-anchor': 'end'});
  nowLabel.textContent = 'now';
  svg.append(nowLabel);
  const summary = [];
  legend.replaceChildren();
  for (const s of series) {
    const visible = s.points.filter(([t, v]) => v !== null && t >= now - windowS);
    if (visible.length) {
      const path = visible.map(([t, v], i) => (i ? 'L' : 'M') + x(t).toFixed(1) + ' ' +
                                              y(v).toFixed(1)).join(' ');
      svg.append(svgElement('path', {d: path, fill: 'none', stroke: s.colour,
                                     'stroke-width': 2, 'vector-effect': 'non-scaling-stroke'}));
      summary.push(s.name + ' ' + formatValue(visible[visible.length - 1][1]));
    }
    const swatch = document.createElement('span');
    swatch.className = 'swatch';
    swatch.style.background = s.colour;
    legend.append(swatch, s.name);
  }
  svg.dataset.max = String(max);
  svg.dataset.points = String(points);
  svg.setAttribute('aria-description', summary.length ? 'latest: ' + summary.join(', ') : 'no data yet');
}
