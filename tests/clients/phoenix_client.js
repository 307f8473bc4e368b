// Drives the official `phoenix` JavaScript client against a DPS server for the Python tests.
//
//   node phoenix_client.js <scenario> <socket-url> [key=value ...]
//
// <socket-url> is the socket base the client is given, e.g. ws://127.0.0.1:4000/socket (the
// client appends /websocket and the query string). Options: vsn=2.0.0|1.0.0, topic=...,
// timeout=<ms> (the whole run; default 20000), token=... (scenarios "auth", "params",
// "refused"), tokens=t1,t2,... (scenario "refresh": the `params` function hands them out
// in turn), count=N (scenario "recover": the messages to wait for), name=..., key=...,
// meta=<JSON> (scenario "presence").
//
// Scenario "presence" is driven by the test: one client (named `name`) joins `topic` with
// {presence: {key, meta}}, keeps phoenix.js's `Presence` for it, and prints its list() at
// every onSync; it reads commands from stdin, one JSON object a line: {"do": "update",
// "meta": {...}} pushes presence_update, {"do": "leave"} leaves, {"do": "quit"} ends.
//
// Every observed event is printed as one JSON object per line on stdout, with the client
// ("a" or "b") it happened on:
//   {"client":"a","event":"open","protocol":"..."}       the socket opened
//   {"client":"a","event":"close","code":1001}           the socket closed (any reason)
//   {"client":"a","event":"frame","raw":<frame>}         a frame as the server sent it: the
//                                                        parsed JSON text, or {"hex": "..."}
//   {"client":"a","event":"join","status":"ok","join_ref":"3","response":{}}
//   {"client":"a","event":"reply","push":"publish","status":"ok","response":{}}
//   {"client":"a","event":"leave","join_ref":"3","ref":"9"}  a leave was sent with that ref
//   {"client":"a","event":"message","name":"greet","join_ref":"3","payload":{...}}
//   {"client":"a","event":"channel_close"} / {"client":"a","event":"channel_error"}
//   {"client":"a","event":"sync","list":[{"key":"alice","metas":[...]}, ...]}  (presence)
//   {"event":"wait","for":"..."}                         the script now waits for the test
//   {"event":"done"}                                     the scenario finished (exit 0)
//   {"event":"failure","reason":"..."}                   it did not (exit 1, or 2 on timeout)
// Binary payloads (ArrayBuffer) are printed as {"hex": "..."}. The script checks only what
// it needs to know to go on; the Python test asserts on the lines.
"use strict"

const { Presence, Socket } = require("phoenix")
const WebSocket = require("ws")

const [scenarioName, url, ...rest] = process.argv.slice(2)
const opts = Object.fromEntries(
  rest.map((arg) => {
    const eq = arg.indexOf("=")
    if (eq < 0) fail(`bad option ${JSON.stringify(arg)} (expected key=value)`)
    return [arg.slice(0, eq), arg.slice(eq + 1)]
  }),
)
const vsn = opts.vsn || "2.0.0"
const topic = opts.topic || "topics:js"
const timeoutMs = Number(opts.timeout || 20000)

function emit(line) {
  process.stdout.write(JSON.stringify(line) + "\n")
}

function fail(reason, code = 1) {
  emit({ event: "failure", reason: String(reason) })
  process.exit(code)
}

process.on("uncaughtException", (err) => fail(err && err.stack ? err.stack : err))
process.on("unhandledRejection", (err) => fail(err && err.stack ? err.stack : err))
const deadline = setTimeout(() => fail(`timeout after ${timeoutMs} ms`, 2), timeoutMs)

function hex(buffer) {
  return Buffer.from(buffer).toString("hex")
}

function printable(payload) {
  return payload instanceof ArrayBuffer ? { hex: hex(payload) } : payload
}

// vsn=1.0.0 frames are JSON objects; the client's own serializer only speaks V2.
const v1 = {
  encode(msg, callback) {
    if (msg.payload instanceof ArrayBuffer) throw new Error("V1 cannot carry binary payloads")
    const { join_ref, ref, topic, event, payload } = msg
    callback(JSON.stringify({ join_ref, ref, topic, event, payload }))
  },
  decode(raw, callback) {
    const { join_ref, ref, topic, event, payload } = JSON.parse(raw)
    callback({ join_ref, ref, topic, event, payload })
  },
}

function v2Fields([join_ref, ref, topic, event, payload]) {
  return { join_ref, ref, topic, event, payload }
}

// Resolves when `check` is true; re-evaluated after every event printed by `note`.
const waiters = []
function until(description, check) {
  if (check()) return Promise.resolve()
  emit({ event: "wait", for: description })
  return new Promise((resolve) => waiters.push({ check, resolve }))
}
function recheck() {
  for (const waiter of waiters.slice()) {
    if (waiter.check()) {
      waiters.splice(waiters.indexOf(waiter), 1)
      waiter.resolve()
    }
  }
}

// One client socket with one channel on `topic`, recording what it sees.
class Client {
  constructor(name, socketOpts = {}, channelParams = {}) {
    this.name = name
    this.seen = []
    this.socket = new Socket(url, {
      transport: WebSocket, // never rely on a global WebSocket or the LongPoll fallback
      vsn,
      ...(vsn.startsWith("1.") ? v1 : {}),
      ...socketOpts,
    })
    const decode = this.socket.decode
    this.socket.decode = (raw, callback) => {
      const frame = raw instanceof ArrayBuffer ? { hex: hex(raw) } : JSON.parse(raw)
      this.note({ event: "frame", raw: frame })
      decode(raw, callback)
    }
    this.socket.onOpen(() => {
      // the transport instance: `connection.transport` in 1.8.16, `conn` in earlier releases
      const transport = this.socket.connection ? this.socket.connection.transport : this.socket.conn
      this.note({ event: "open", protocol: transport ? transport.protocol : null })
    })
    this.socket.onClose((e) => this.note({ event: "close", code: e.code, reason: e.reason }))
    this.socket.onError(() => this.note({ event: "socket_error" }))
    this.channel = this.socket.channel(topic, channelParams)
    this.channel.onClose(() => this.note({ event: "channel_close" }))
    this.channel.onError((reason) => this.note({ event: "channel_error", reason }))
  }

  note(line) {
    line = { client: this.name, ...line }
    this.seen.push(line)
    emit(line)
    recheck()
  }

  count(predicate) {
    return this.seen.filter(predicate).length
  }

  listen(name) {
    this.channel.on(name, (payload, ref, joinRef) => {
      const position = ref == null ? {} : { ref } // a broadcast's "epoch:offset", if asked
      this.note({ event: "message", name, join_ref: joinRef, payload: printable(payload), ...position })
    })
  }

  connect() {
    this.socket.connect()
  }

  // Joins (the client rejoins by itself later; every ok is printed); resolves on the first ok.
  join() {
    this.channel
      .join()
      .receive("ok", (response) =>
        this.note({ event: "join", status: "ok", join_ref: this.channel.joinRef(), response }),
      )
      .receive("error", (response) => {
        this.note({ event: "join", status: "error", response })
        fail(`${this.name}: join refused`)
      })
      .receive("timeout", () => {
        this.note({ event: "join", status: "timeout" })
        fail(`${this.name}: join timed out`)
      })
    return until(`${this.name} joined`, () => this.joins() > 0)
  }

  // How many times the channel has joined (the first join, then every rejoin).
  joins() {
    return this.count((l) => l.event === "join" && l.status === "ok")
  }

  push(event, payload, push = event) {
    return new Promise((resolve) => {
      const done = (status) => (response) => {
        this.note({ event: "reply", push, status, response: printable(response) })
        if (status !== "ok") fail(`${this.name}: ${push} got ${status}`)
        resolve(response)
      }
      this.channel
        .push(event, payload)
        .receive("ok", done("ok"))
        .receive("error", done("error"))
        .receive("timeout", done("timeout"))
    })
  }

  // Leaves; resolves once the server has answered the leave (the client itself reports "ok"
  // at once, without waiting for the server) and closed the channel instance.
  async leave() {
    const joinRef = this.channel.joinRef()
    const push = this.channel.leave()
    this.note({ event: "leave", join_ref: joinRef, ref: push.ref })
    await until(`${this.name} leave reply`, () =>
      this.frames().some((f) => f.event === "phx_reply" && f.ref === push.ref),
    )
    await until(`${this.name} phx_close`, () =>
      this.frames().some((f) => f.event === "phx_close" && f.ref === joinRef),
    )
    await until(`${this.name} channel closed`, () => this.count((l) => l.event === "channel_close"))
  }

  // The JSON frames received so far, as {join_ref, ref, topic, event, payload}.
  frames() {
    return this.seen
      .filter((l) => l.event === "frame" && !("hex" in l.raw))
      .map((l) => (Array.isArray(l.raw) ? v2Fields(l.raw) : l.raw))
  }

  disconnect() {
    return new Promise((resolve) => this.socket.disconnect(resolve))
  }

  received(name) {
    return this.count((l) => l.event === "message" && l.name === name)
  }
}

const scenarios = {
  // Two sockets join; a publishes ["greet", {"text": "hi"}]; both get it; both leave.
  async pubsub() {
    const a = new Client("a")
    const b = new Client("b")
    for (const c of [a, b]) {
      c.listen("greet")
      c.connect()
    }
    await Promise.all([a.join(), b.join()])
    await a.push("publish", ["greet", { text: "hi" }])
    await until("greet on a and b", () => a.received("greet") > 0 && b.received("greet") > 0)
    await Promise.all([a.leave(), b.leave()])
    await Promise.all([a.disconnect(), b.disconnect()])
  },

  // Two V2 sockets join; a publishes raw bytes (an ArrayBuffer); both get them on "publish".
  async binary() {
    const a = new Client("a")
    const b = new Client("b")
    for (const c of [a, b]) {
      c.listen("publish")
      c.connect()
    }
    await Promise.all([a.join(), b.join()])
    const bytes = Uint8Array.from([0x00, 0xde, 0xad, 0xbe, 0xef, 0x7b, 0x5b, 0x22, 0xff, 0x0a])
    await a.push("publish", bytes.buffer)
    await until("publish on a and b", () => a.received("publish") > 0 && b.received("publish") > 0)
    await Promise.all([a.disconnect(), b.disconnect()])
  },

  // One socket joins and stays; the test restarts the server, the client reconnects and
  // rejoins by itself, and the test publishes "news": done once it arrives after a rejoin.
  async reconnect() {
    const a = new Client("a", {
      reconnectAfterMs: () => 100,
      rejoinAfterMs: () => 100,
    })
    a.listen("news")
    a.connect()
    await a.join()
    await until("a rejoined", () => a.joins() > 1)
    await until("news on a", () => a.received("news") > 0)
    await a.disconnect()
  },

  // The token as a connect param (`params: {token}`): join the topic, publish, receive.
  async params() {
    const a = new Client("a", { params: { token: opts.token } })
    a.listen("greet")
    a.connect()
    await a.join()
    await a.push("publish", ["greet", { text: "params" }])
    await until("greet on a", () => a.received("greet") > 0)
    await a.disconnect()
  },

  // A refused socket never opens: the client sees errors and keeps retrying.
  async refused() {
    const a = new Client("a", { params: { token: opts.token }, reconnectAfterMs: () => 100 })
    a.connect()
    await until("three failed attempts", () => a.count((l) => l.event === "socket_error") >= 3)
    if (a.count((l) => l.event === "open") > 0) fail("a refused socket opened")
    await a.disconnect()
  },

  // `params` is a function, called on every (re)connect, handing out `tokens` in turn: the
  // first expires while connected, the server closes the socket, the client reconnects
  // with the next token and rejoins by itself; done once "news" arrives after the rejoin.
  async refresh() {
    const tokens = opts.tokens.split(",")
    let handed = 0
    const a = new Client("a", {
      params: () => ({ token: tokens[Math.min(handed++, tokens.length - 1)] }),
      reconnectAfterMs: () => 100,
      rejoinAfterMs: () => 100,
    })
    a.listen("news")
    a.connect()
    await a.join()
    await until("the server closing the socket", () => a.count((l) => l.event === "close") > 0)
    await until("a rejoined", () => a.joins() > 1)
    await until("news on a", () => a.received("news") > 0)
    await a.disconnect()
  },

  // Phoenix-style pushes under `events = "any"` and `echo = false`: a pushes "new_msg",
  // b receives it as "new_msg", a gets an ok reply and not its own message.
  async new_msg() {
    const a = new Client("a")
    const b = new Client("b")
    for (const c of [a, b]) {
      c.listen("new_msg")
      c.connect()
    }
    await Promise.all([a.join(), b.join()])
    await a.push("new_msg", { body: "hi" })
    await until("new_msg on b", () => b.received("new_msg") > 0)
    await b.push("new_msg", { body: "hello" })
    await until("new_msg on a", () => a.received("new_msg") > 0)
    await Promise.all([a.disconnect(), b.disconnect()])
  },

  // Recovery as the README shows it: the channel's params are a function, called on every
  // (re)join, naming the position of the last message seen; done once `count` messages
  // "m" have arrived (the test restarts the gateway meanwhile).
  async recover() {
    let last = null
    const a = new Client(
      "a",
      { reconnectAfterMs: () => 100, rejoinAfterMs: () => 100 },
      () => ({ recover: last }),
    )
    a.channel.on("m", (_payload, ref) => {
      const colon = ref.lastIndexOf(":")
      last = { epoch: ref.slice(0, colon), offset: Number(ref.slice(colon + 1)) }
    })
    a.listen("m")
    a.connect()
    await a.join()
    const count = Number(opts.count)
    await until(`${count} messages on a`, () => a.received("m") >= count)
    await a.disconnect()
  },

  // The socket offers the token as a subprotocol; it must open (the server answers
  // "phoenix") and work: join, publish, receive the message.
  async auth() {
    const a = new Client("a", { authToken: opts.token || "s3cr3t-token" })
    a.listen("greet")
    a.connect()
    await a.join()
    await a.push("publish", ["greet", { text: "token" }])
    await until("greet on a", () => a.received("greet") > 0)
    await a.disconnect()
  },
}

// Commands from the test, one JSON object a line on stdin: a function that resolves to the
// next one, in order.
function stdinCommands() {
  const commands = []
  let wake = () => {}
  require("readline")
    .createInterface({ input: process.stdin })
    .on("line", (line) => {
      commands.push(JSON.parse(line))
      wake()
    })
  return async () => {
    while (commands.length === 0) await new Promise((resolve) => (wake = resolve))
    return commands.shift()
  }
}

scenarios.presence = async function presence() {
  const nextCommand = stdinCommands()
  const name = opts.name || "a"
  const params = { presence: { key: opts.key, meta: JSON.parse(opts.meta || "{}") } }
  const fast = { reconnectAfterMs: () => 100, rejoinAfterMs: () => 100 }
  const c = new Client(name, fast, params)
  const tracked = new Presence(c.channel)
  tracked.onSync(() =>
    c.note({ event: "sync", list: tracked.list((key, { metas }) => ({ key, metas })) }),
  )
  c.connect()
  await c.join()
  for (;;) {
    const command = await nextCommand()
    if (command.do === "update") await c.push("presence_update", command.meta)
    else if (command.do === "leave") await c.leave()
    else if (command.do === "quit") break
    else fail(`unknown command ${JSON.stringify(command)}`)
  }
  await c.disconnect()
}

const scenario = scenarios[scenarioName]
if (!url || !scenario) {
  const names = Object.keys(scenarios).join("|")
  fail(`usage: node phoenix_client.js <${names}> <socket-url> [key=value ...]`)
}
scenario().then(() => {
  clearTimeout(deadline)
  emit({ event: "done" })
  process.exit(0)
}, fail)
