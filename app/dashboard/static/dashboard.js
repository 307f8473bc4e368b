// The dashboard page: one EventSource on this node, which sends the history of the last
// minutes once ("history"), then the whole cluster every second ("frame"). Everything the
// page shows comes from those events; it never polls.

import { LineChart } from "./chart.js"

const PALETTE = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#ca8a04", "#db2777"]
const STALE = 3 // seconds without a frame before the page says the figures are old
const CHARTS = [
  // [index in a history point, title]
  [1, "publishes/s"],
  [2, "deliveries/s"],
  [3, "client sockets"],
  [4, "publish ack p99 (ms)"],
  [5, "delivery p99 (ms)"],
]

const number = new Intl.NumberFormat("en", { maximumFractionDigits: 1 })
const $ = (id) => document.getElementById(id)

let series = {} // node name -> [[time, publishes/s, deliveries/s, sockets, ack p99, delivery p99], ...]
let windowSeconds = 300
let lastFrame = null
let lastFrameAt = 0
const colors = new Map()
const charts = CHARTS.map(([index, title]) => [index, new LineChart($("charts"), title)])

function colorOf(name) {
  if (!colors.has(name)) colors.set(name, PALETTE[colors.size % PALETTE.length])
  return colors.get(name)
}

function cell(row, content, className) {
  const td = row.insertCell()
  if (content instanceof Node) td.append(content)
  else td.textContent = content ?? "—"
  if (className) td.className = className
  return td
}

function rate(value) {
  return value == null ? "—" : number.format(value)
}

function latency(p50, p99) {
  return p50 == null ? "—" : `${number.format(p50)} / ${number.format(p99)} ms`
}

function ago(since, now) {
  const seconds = Math.max(0, Math.round(now - since))
  return seconds < 120 ? `${seconds} s` : `${Math.round(seconds / 60)} min`
}

function swatch(name) {
  const span = document.createElement("span")
  span.className = "swatch"
  span.style.background = colorOf(name)
  return span
}

function renderNodes(frame) {
  const body = $("nodes").tBodies[0]
  const rows = frame.nodes.map((node) => {
    const row = document.createElement("tr")
    row.dataset.node = node.name
    row.dataset.status = node.status
    const name = document.createElement("span")
    name.append(swatch(node.name), node.name)
    cell(row, name, "name")
    cell(row, { all: "embedded", ws: "gateway", ts: "topic server" }[node.role] ?? node.role)
    const status = cell(row, node.status === "up" ? "up" : `${node.status} ${ago(node.since, frame.time)}`, "status")
    if (node.reason) status.title = node.reason
    if (node.status !== "up") {
      row.classList.add("gone")
      const reason = cell(row, node.reason ?? "", "reason")
      reason.colSpan = 11
      return row
    }
    row.dataset.publishes = node.publishes
    row.dataset.deliveries = node.deliveries
    const ready = cell(row, node.unready.length ? "not ready" : "ready", node.unready.length ? "unready" : "ready")
    if (node.unready.length) ready.title = node.unready.join("; ")
    cell(row, node.incarnation ? node.incarnation.slice(0, 8) : "—", "mono")
    cell(row, node.links.join(", ") || "—")
    for (const value of [node.sockets, node.topics]) cell(row, value == null ? "—" : number.format(value), "num")
    cell(row, rate(node.publishes_per_s), "num")
    cell(row, rate(node.deliveries_per_s), "num")
    cell(row, number.format(node.errors), node.errors_per_s > 0 ? "num bad" : "num")
    cell(row, number.format(node.slow_consumers), "num")
    cell(row, latency(node.ack_p50_ms, node.ack_p99_ms), "num")
    cell(row, latency(node.delivery_p50_ms, node.delivery_p99_ms), "num")
    return row
  })
  body.replaceChildren(...rows)
}

function bar(shares, label) {
  const figure = document.createElement("div")
  figure.className = "ring"
  const caption = document.createElement("p")
  caption.textContent = label
  const strip = document.createElement("div")
  strip.className = "bar"
  for (const [name, share] of Object.entries(shares)) {
    const segment = document.createElement("span")
    segment.dataset.owner = name
    segment.dataset.share = share.toFixed(4)
    segment.style.flexGrow = share
    segment.style.background = colorOf(name)
    segment.textContent = `${name} ${Math.round(share * 100)}%`
    segment.title = `${name} owns ${(share * 100).toFixed(1)}% of the topics`
    strip.append(segment)
  }
  figure.append(caption, strip)
  return figure
}

function renderRing(frame) {
  const ring = frame.ring
  const parts = []
  if (ring === null) {
    const p = document.createElement("p")
    p.textContent = "No gateway in view: the ring is what the gateways make of the live topic servers."
    parts.push(p)
  } else {
    parts.push(bar(ring.owners, `Owners, as ${ring.seen_by} sees them`))
    if (ring.target) parts.push(bar(ring.target, `Handover under way: ${ring.pending.join(", ")} joining`))
    const off = ring.declared.filter((name) => !(name in ring.owners) && !(ring.target && name in ring.target))
    const notes = []
    if (off.length) notes.push(`Declared but off the ring: ${off.join(", ")}.`)
    if (ring.disagree.length) notes.push(`Seen differently by ${ring.disagree.join(", ")} (a move in progress).`)
    for (const note of notes) {
      const p = document.createElement("p")
      p.className = "note"
      p.textContent = note
      parts.push(p)
    }
  }
  $("ring").replaceChildren(...parts)
}

function renderCharts(frame) {
  const listed = frame.nodes.map((node) => node.name).filter((name) => name in series)
  const names = [...new Set([...listed, ...Object.keys(series)])]
  const legend = names.map((name) => {
    const item = document.createElement("span")
    item.append(swatch(name), name)
    return item
  })
  $("legend").replaceChildren(...legend)
  for (const [index, chart] of charts) {
    const lines = names.map((name) => ({
      color: colorOf(name),
      points: series[name].map((point) => [point[0], point[index]]),
    }))
    chart.draw(lines, frame.time, windowSeconds)
  }
}

function onFrame(frame) {
  lastFrame = frame
  lastFrameAt = Date.now()
  const start = frame.time - windowSeconds
  for (const [name, point] of Object.entries(frame.points)) {
    const points = (series[name] ??= [])
    if (!points.length || point[0] > points[points.length - 1][0]) points.push(point)
  }
  for (const [name, points] of Object.entries(series)) {
    while (points.length && points[0][0] < start) points.shift()
    if (!points.length) delete series[name]
  }
  for (const node of frame.nodes) colorOf(node.name) // in the table's order, on first sight
  $("seen-from").textContent = frame.seen_from
  renderNodes(frame)
  renderRing(frame)
  renderCharts(frame)
  live("live", `live · ${frame.nodes.length} node${frame.nodes.length === 1 ? "" : "s"}`)
}

function live(state, text) {
  const indicator = $("live")
  indicator.dataset.state = state
  indicator.textContent = text
}

const source = new EventSource("/dashboard/events")
source.addEventListener("history", (event) => {
  const history = JSON.parse(event.data)
  windowSeconds = history.window
  series = history.series
})
source.addEventListener("frame", (event) => onFrame(JSON.parse(event.data)))
source.addEventListener("error", () => {
  if (source.readyState === EventSource.CLOSED) live("closed", "refused: reload the page to sign in again")
  else live("reconnecting", "reconnecting to this node…")
})
setInterval(() => {
  const silent = (Date.now() - lastFrameAt) / 1000
  if (lastFrame !== null && silent > STALE && source.readyState === EventSource.OPEN)
    live("stale", `no update for ${Math.round(silent)} s`)
}, 1000)
