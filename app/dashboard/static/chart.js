// A line chart in SVG: one line per node over the last few minutes, drawn again on each
// frame. Hand-made rather than a library: five charts of a few hundred points each need
// a path per line and two labels, nothing more.

const SVG = "http://www.w3.org/2000/svg"
const WIDTH = 480
const HEIGHT = 140
const TOP = 8
const BOTTOM = 20
const GAP = 3.5 // seconds between two points beyond which the line breaks (a node was down)

function svg(name, attributes = {}) {
  const element = document.createElementNS(SVG, name)
  for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, value)
  return element
}

function scaleTop(max) {
  // The next 1, 2 or 5 times a power of ten, so the top label reads well.
  if (max <= 0) return 1
  const power = 10 ** Math.floor(Math.log10(max))
  for (const step of [1, 2, 5, 10]) if (max <= step * power) return step * power
  return 10 * power
}

const compact = new Intl.NumberFormat("en", { maximumFractionDigits: 2, notation: "compact" })

export class LineChart {
  constructor(parent, title) {
    const figure = document.createElement("figure")
    const caption = document.createElement("figcaption")
    caption.textContent = title
    this.svg = svg("svg", { viewBox: `0 0 ${WIDTH} ${HEIGHT}`, role: "img", "aria-label": title })
    figure.append(caption, this.svg)
    parent.append(figure)
  }

  // lines: [{color, points: [[time, value or null], ...]}], times in seconds.
  draw(lines, now, window) {
    const start = now - window
    let max = 0
    for (const { points } of lines)
      for (const [time, value] of points) if (time >= start && value != null) max = Math.max(max, value)
    const top = scaleTop(max)
    const x = (time) => ((time - start) / window) * WIDTH
    const y = (value) => TOP + (1 - value / top) * (HEIGHT - TOP - BOTTOM)

    const drawn = [
      svg("line", { x1: 0, x2: WIDTH, y1: y(0), y2: y(0), class: "axis" }),
      svg("line", { x1: 0, x2: WIDTH, y1: y(top), y2: y(top), class: "grid" }),
    ]
    for (const { color, points } of lines) {
      let d = ""
      let last = null
      for (const [time, value] of points) {
        if (time < start || value == null) {
          last = null
          continue
        }
        const move = last === null || time - last > GAP
        d += `${move ? "M" : "L"}${x(time).toFixed(1)},${y(value).toFixed(1)}`
        last = time
      }
      if (d) drawn.push(svg("path", { d, stroke: color, class: "line" }))
    }
    const texts = [
      [4, y(top) + 11, "start", compact.format(top)],
      [4, HEIGHT - 5, "start", `−${Math.round(window / 60)} min`],
      [WIDTH - 4, HEIGHT - 5, "end", "now"],
    ]
    for (const [tx, ty, anchor, content] of texts) {
      const text = svg("text", { x: tx, y: ty, "text-anchor": anchor })
      text.textContent = content
      drawn.push(text)
    }
    this.svg.replaceChildren(...drawn)
  }
}
