// The demo chat: a name, rooms (topics chat:<room>) and messages, through the official
// phoenix client and the gateway that served this page.
//
// Messages go out as DPS's `publish` envelope, ["message", {name, body, at}], which the
// shipped channel rules let every member of a `chat:` topic send. Those rules also keep
// each room's recent messages and its presence; with rules that keep neither, the page
// works without them:
// - who is in a room: phoenix's Presence, fed by the presence_state and presence_diff
//   events of a channel whose rule keeps presence; the page is tracked under its name;
// - the recent messages: every join asks to recover ({"recover": {"epoch", "offset"}}).
//   The first join of a room, when the page opens (or reloads), names no position (epoch
//   ""), and the server replays everything the room still keeps; a rejoin after a
//   reconnect names the position of the last message the page got (each broadcast
//   carries it, "epoch:offset", in the ref slot), and the server replays what came after
//   it. Either comes in the join itself, before any live message: no gap, no overlap.
//   When the room no longer keeps what the page missed ({"recovered": false}), the page
//   says so where messages are missing.
// A reloaded page asks for everything kept rather than recovering from a position saved
// before the reload: the messages it showed went with the reload, so "what came after the
// last one seen" would leave them out.

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
}

// "epoch:offset" in a broadcast's ref slot; null for a plain broadcast (ref null). The
// epoch stays a string, whatever it looks like: the server wants it back as one.
function positionOf(ref) {
  const colon = typeof ref === "string" ? ref.lastIndexOf(":") : -1
  if (colon < 1) return null
  const offset = Number(ref.slice(colon + 1))
  if (!Number.isSafeInteger(offset) || offset < 1) return null
  return { epoch: ref.slice(0, colon), offset }
}

function hue(name) {
  let hash = 0
  for (const char of name) hash = (hash * 31 + char.codePointAt(0)) % 360
  return hash
}

const socket = new Socket("/socket")
const rooms = new Map() // room name -> {topic, channel, presence, messages, position, ...}
let current = null

// The recover of a first join: no position yet, so everything the room still keeps.
const EVERYTHING_KEPT = { epoch: "", offset: 0 }
const EARLIER_GONE = "Earlier messages are no longer kept."
const MISSED = "Messages sent while this page was disconnected may be missing: the room no longer keeps them."

function connection(state, text) {
  $("connection").dataset.state = state
  $("connection").textContent = text
}
socket.onOpen(() => connection("open", `connected to ${location.host}`))
socket.onError(() => connection("closed", "disconnected: reconnecting…"))
socket.onClose(() => connection("closed", "disconnected: reconnecting…"))

function joinParams(room) {
  room.asked = room.position ?? EVERYTHING_KEPT
  return { recover: room.asked, presence: { key: saved.name, meta: { name: saved.name } } }
}

function join(name) {
  if (rooms.has(name)) return rooms.get(name)
  const topic = `chat:${name}`
  const room = {
    name,
    topic,
    channel: null,
    presence: null,
    hasPresence: false,
    messages: [], // {key, name, body, at} or {gap}, oldest first
    shown: new Set(), // the positions ("epoch:offset") of the messages kept in `messages`
    position: null, // the last message's {epoch, offset}
    asked: null, // the recover the latest join sent
    unread: 0,
    state: "joining…",
  }
  // A function, so that every rejoin (after a reconnect) recovers from the latest position.
  const channel = (room.channel = socket.channel(topic, () => joinParams(room)))
  room.presence = new Presence(channel)
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
    .receive("ok", (reply) => {
      answered(room, reply)
      joined("joined")
    })
    .receive("error", ({ reason }) => joined(`not joined: ${reason}`))
    .receive("timeout", () => joined("no answer to the join yet: retrying"))
  channel.onError(() => joined("rejoining…"))
  saved.rooms = [...rooms.keys()]
  renderRooms()
  return room
}

// The join's ok reply, {recovered, epoch, offset}; what it recovered comes right after it.
function answered(room, { recovered, epoch, offset }) {
  if (recovered !== false) return
  if (room.asked.epoch === "") {
    // A first join gets everything the room keeps, which no longer goes back to its first
    // message (or, epoch "", the room keeps nothing: no history, or none yet).
    if (epoch !== "" && room.messages.length === 0) add(room, { gap: EARLIER_GONE })
    return
  }
  add(room, { gap: MISSED })
  // Recover from the room's current position next time; a reply with epoch "" names none.
  if (epoch !== "") room.position = { epoch, offset }
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
  const key = position && `${position.epoch}:${position.offset}`
  if (key !== null) {
    if (room.shown.has(key)) return // replayed again by a rejoin: shown already
    room.shown.add(key)
    room.position = position
  }
  add(room, { key, name: String(payload.name ?? "?"), body: String(payload.body ?? ""), at: payload.at })
}

function add(room, item) {
  room.messages.push(item)
  for (const dropped of room.messages.splice(0, Math.max(0, room.messages.length - KEEP)))
    room.shown.delete(dropped.key)
  if (room === current) appendMessage(item)
  else if (item.gap === undefined) {
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
  if (message.gap !== undefined) {
    item.className = "gap"
    item.textContent = message.gap
  } else {
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
