// The demo chat: a name, rooms (topics room:<name>) and messages, through the official
// phoenix client and the gateway that served this page.
//
// Messages go out as DPS's `publish` envelope, ["message", {name, body, at}], which the
// default channel rules let every member of a topic send. Two features come from the
// server when it has them, and cost nothing when it has not:
// - who is in a room: phoenix's Presence, fed by the presence_state and presence_diff
//   events of a channel whose rule keeps presence;
// - no message missed: a broadcast may carry its position "epoch:offset" in the ref slot;
//   the page keeps the last one per room in localStorage and asks, when it (re)joins, to
//   recover from there ({"recover": {"epoch", "offset"}}, or {"positions": true} the first
//   time). A server that knows none of this ignores those keys and sends no positions.

import { Presence, Socket } from "./vendor/phoenix-1.8.16/phoenix.mjs"

const KEEP = 200 // messages a room keeps on the page
const ROOM = /^[A-Za-z0-9_-]{1,40}$/
const $ = (id) => document.getElementById(id)

const saved = {
  get name() {
    return localStorage.getItem("dps.demo.name")
  },
  set name(value) {
    localStorage.setItem("dps.demo.name", value)
  },
  get rooms() {
    const rooms = JSON.parse(localStorage.getItem("dps.demo.rooms") ?? '["lobby"]')
    return rooms.filter((room) => ROOM.test(room))
  },
  set rooms(value) {
    localStorage.setItem("dps.demo.rooms", JSON.stringify(value))
  },
  get current() {
    return localStorage.getItem("dps.demo.current")
  },
  set current(value) {
    localStorage.setItem("dps.demo.current", value)
  },
  position(topic) {
    return JSON.parse(localStorage.getItem(`dps.demo.position.${topic}`) ?? "null")
  },
  keepPosition(topic, position) {
    const last = this.position(topic)
    if (last === null || last.epoch !== position.epoch || position.offset > last.offset)
      localStorage.setItem(`dps.demo.position.${topic}`, JSON.stringify(position))
  },
}

// "epoch:offset" in a broadcast's ref slot; null for a plain broadcast (ref null).
function positionOf(ref) {
  const colon = typeof ref === "string" ? ref.lastIndexOf(":") : -1
  if (colon < 1) return null
  const epoch = ref.slice(0, colon)
  const offset = Number(ref.slice(colon + 1))
  if (!Number.isSafeInteger(offset)) return null
  return { epoch: /^\d+$/.test(epoch) ? Number(epoch) : epoch, offset }
}

function hue(name) {
  let hash = 0
  for (const char of name) hash = (hash * 31 + char.codePointAt(0)) % 360
  return hash
}

const socket = new Socket("/socket")
const rooms = new Map() // room name -> {topic, channel, presence, messages, positions, ...}
let current = null

function connection(state, text) {
  $("connection").dataset.state = state
  $("connection").textContent = text
}
socket.onOpen(() => connection("open", `connected to ${location.host}`))
socket.onError(() => connection("closed", "disconnected: reconnecting…"))
socket.onClose(() => connection("closed", "disconnected: reconnecting…"))

function joinParams(topic) {
  const position = saved.position(topic)
  const params = { name: saved.name }
  if (position === null) params.positions = true
  else params.recover = position
  return params
}

function join(name) {
  if (rooms.has(name)) return rooms.get(name)
  const topic = `room:${name}`
  // A function, so that every rejoin (after a reconnect) recovers from the latest position.
  const channel = socket.channel(topic, () => joinParams(topic))
  const room = {
    name,
    topic,
    channel,
    presence: new Presence(channel),
    hasPresence: false,
    messages: [],
    positions: new Set(),
    unread: 0,
    state: "joining…",
  }
  rooms.set(name, room)
  channel.on("message", (payload, ref) => received(room, payload, ref))
  room.presence.onSync(() => {
    room.hasPresence = true
    if (room === current) renderMembers()
  })
  const joined = (state) => {
    room.state = state
    if (room === current) renderRoom()
  }
  channel
    .join()
    .receive("ok", () => joined("joined"))
    .receive("error", ({ reason }) => joined(`not joined: ${reason}`))
    .receive("timeout", () => joined("no answer to the join yet: retrying"))
  channel.onError(() => joined("rejoining…"))
  saved.rooms = [...rooms.keys()]
  renderRooms()
  return room
}

function leave(room) {
  room.channel.leave()
  rooms.delete(room.name)
  saved.rooms = [...rooms.keys()]
  if (room === current) show(rooms.values().next().value ?? join("lobby"))
  renderRooms()
}

function received(room, payload, ref) {
  const position = positionOf(ref)
  if (position !== null) {
    const key = `${position.epoch}:${position.offset}`
    if (room.positions.has(key)) return // recovered again after a rejoin: shown already
    room.positions.add(key)
    saved.keepPosition(room.topic, position)
  }
  room.messages.push({ name: String(payload.name ?? "?"), body: String(payload.body ?? ""), at: payload.at })
  if (room.messages.length > KEEP) room.messages.splice(0, room.messages.length - KEEP)
  if (room === current) appendMessage(room.messages[room.messages.length - 1])
  else {
    room.unread += 1
    renderRooms()
  }
}

function send(body) {
  const room = current
  room.channel
    .push("publish", ["message", { name: saved.name, body, at: Date.now() }])
    .receive("error", ({ reason }) => note(room, `not sent (${reason}): ${body}`))
    .receive("timeout", () => note(room, `not sent (no answer): ${body}`))
}

function note(room, text) {
  room.state = text
  if (room === current) renderRoom()
}

function show(room) {
  current = room
  room.unread = 0
  saved.current = room.name
  renderRooms()
  renderRoom()
  $("messages").replaceChildren()
  for (const message of room.messages) appendMessage(message)
  renderMembers()
}

function renderRooms() {
  const items = [...rooms.values()].map((room) => {
    const item = document.createElement("li")
    item.dataset.room = room.name
    if (room === current) item.className = "current"
    const open = document.createElement("button")
    open.type = "button"
    open.textContent = `# ${room.name}`
    if (room.unread) {
      const badge = document.createElement("span")
      badge.className = "badge"
      badge.textContent = room.unread
      open.append(badge)
    }
    open.addEventListener("click", () => show(room))
    const close = document.createElement("button")
    close.type = "button"
    close.className = "leave"
    close.title = `leave ${room.name}`
    close.textContent = "×"
    close.addEventListener("click", () => leave(room))
    item.append(open, close)
    return item
  })
  $("rooms").replaceChildren(...items)
}

function renderRoom() {
  $("room-title").textContent = `# ${current.name}`
  $("room-state").textContent = current.state
}

function appendMessage(message) {
  const item = document.createElement("li")
  item.dataset.from = message.name
  if (message.name === saved.name) item.className = "mine"
  const who = document.createElement("span")
  who.className = "who"
  who.style.color = `hsl(${hue(message.name)} 60% 35%)`
  who.textContent = message.name
  const body = document.createElement("span")
  body.className = "body"
  body.textContent = message.body
  item.append(who, body)
  if (typeof message.at === "number") {
    const time = document.createElement("time")
    time.dateTime = new Date(message.at).toISOString()
    time.textContent = new Date(message.at).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })
    item.append(time)
  }
  const list = $("messages")
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40
  list.append(item)
  while (list.children.length > KEEP) list.firstElementChild.remove()
  if (atBottom) list.scrollTop = list.scrollHeight
}

function renderMembers() {
  const room = current
  $("members-note").textContent = room.hasPresence
    ? ""
    : "This server sends no presence for this room: who is here is not known."
  const names = room.presence.list((key, { metas }) => metas[0]?.name ?? key)
  const items = [...new Set(names)].sort().map((name) => {
    const item = document.createElement("li")
    item.dataset.member = name
    item.textContent = name
    return item
  })
  $("members").replaceChildren(...items)
}

function start(name) {
  saved.name = name
  $("my-name").textContent = name
  $("name-form").hidden = true
  $("me").hidden = false
  $("chat").hidden = false
  if (!socket.isConnected()) socket.connect()
  for (const room of saved.rooms) join(room)
  show(rooms.get(saved.current) ?? join(saved.rooms[0] ?? "lobby"))
  $("send-form").elements.body.focus()
}

$("name-form").addEventListener("submit", (event) => {
  event.preventDefault()
  const name = event.target.elements.name.value.trim()
  if (name) start(name)
})
$("rename").addEventListener("click", () => {
  // Presence and the join params carry the name: rejoin every room under the new one.
  const name = prompt("Your name", saved.name)?.trim()
  if (!name || name === saved.name) return
  saved.name = name
  $("my-name").textContent = name
  for (const room of rooms.values()) {
    room.channel.leave()
    rooms.delete(room.name)
  }
  start(name)
})
$("join-form").addEventListener("submit", (event) => {
  event.preventDefault()
  const input = event.target.elements.room
  const name = input.value.trim()
  if (!ROOM.test(name)) return
  input.value = ""
  show(join(name))
})
$("send-form").addEventListener("submit", (event) => {
  event.preventDefault()
  const input = event.target.elements.body
  const body = input.value.trim()
  if (!body) return
  input.value = ""
  send(body)
})

if (saved.name) start(saved.name)
else $("name-form").hidden = false
