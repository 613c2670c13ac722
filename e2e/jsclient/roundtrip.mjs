#!/usr/bin/env node
// Element-like Matrix client (matrix-js-sdk + Rust crypto) for Synapse Medic's e2e test.
//
//   roundtrip: node roundtrip.mjs --hs URL --user MXID --password PW (--invite MXID | --room ROOMID)
//                --send TEXT --expect-from MXID [--timeout S] [--unencrypted] [--verbose]
//   echo:      node roundtrip.mjs --hs URL --user MXID --password PW --echo [--timeout S] [--verbose]
//
// stdout carries exactly one JSON line (roundtrip mode); everything else goes to stderr.
import { parseArgs } from "node:util";

let opt;
try {
    ({ values: opt } = parseArgs({ options: {
        hs: { type: "string" }, user: { type: "string" }, password: { type: "string" },
        invite: { type: "string" }, room: { type: "string" }, send: { type: "string" },
        "expect-from": { type: "string" }, timeout: { type: "string", default: "60" },
        unencrypted: { type: "boolean", default: false }, echo: { type: "boolean", default: false },
        verbose: { type: "boolean", default: false },
    } }));
    if (!(Number(opt.timeout) > 0)) throw new Error(`bad --timeout ${opt.timeout}`);
} catch (e) {
    console.error(e.message);
    process.stdout.write(JSON.stringify({ error: `usage: ${e.message}` }) + "\n");
    process.exit(1);
}

// The SDK's loggers (loglevel, pinned at DEBUG per module) and the Rust crypto's
// tracing (turned on at DEBUG by initRustCrypto) all print via console.*, and in
// Node console.log/info/debug/trace write to stdout. Silence those (or send them to
// stderr with --verbose) before the SDK is loaded; warn/error already go to stderr.
const toStderr = (...a) => console.error(...a);
for (const m of ["log", "info", "debug", "trace"]) console[m] = opt.verbose ? toStderr : () => {};
const note = (...a) => console.error(`[jsclient ${((Date.now() - t0) / 1000).toFixed(2)}s]`, ...a);
const t0 = Date.now();

const sdk = await import("matrix-js-sdk");
const { ClientEvent, RoomEvent, RoomMemberEvent, MatrixEventEvent, EventType, MsgType, Preset } = sdk;

// Minimal Logger handed to the client: warn and error to stderr, the rest dropped.
const quietLogger = {
    trace() {}, debug() {}, info() {}, log() {},
    warn: (...a) => console.warn(...a), error: (...a) => console.error(...a),
    getChild() { return quietLogger; },
};

const timeoutMs = Number(opt.timeout) * 1000;
const deadline = Date.now() + timeoutMs;
let client; // set once logged in; stopped on every exit path

async function finish(result, code) {
    process.stdout.write(JSON.stringify(result) + "\n");
    await shutdown();
    process.exit(code);
}
// Log out (deleting this run's throwaway device, so test users do not pile up devices that
// every sender must encrypt for), then exit: the SDK keeps timers/sockets alive otherwise.
async function shutdown() {
    if (!client) return;
    // Silence in-flight crypto/sync work that complains once the client is stopped.
    console.warn = console.error = opt.verbose ? console.error : () => {};
    const cap = new Promise((r) => setTimeout(r, 3000).unref());
    await Promise.race([client.logout(true).catch(() => {}), cap]);
}
function fail(msg, err, extra = {}) {
    if (err) console.error(err);
    finish({ error: msg + (err ? `: ${err.message ?? err}` : ""), ...extra }, 1);
}

// Resolve when pred() becomes true, re-checking on the given client events, or reject at the deadline.
function waitFor(what, pred, events) {
    return new Promise((resolve, reject) => {
        const check = () => { try { const v = pred(); if (v) { done(); resolve(v); } } catch (e) { done(); reject(e); } };
        const timer = setTimeout(() => { done(); reject(new Error(`timeout waiting for ${what}`)); },
            Math.max(0, deadline - Date.now()));
        const done = () => { clearTimeout(timer); for (const e of events) client.off(e, check); };
        for (const e of events) client.on(e, check);
        check();
    });
}

// Call cb(event, room) for each live (not back-paginated/initial-history) m.room.message,
// after the SDK has decrypted it. onFail(event) is called when decryption fails; the SDK
// retries by itself if the room key arrives later, so a failure may be followed by a success.
function onLiveMessage(cb, onFail = () => {}) {
    client.on(RoomEvent.Timeline, (ev, room, toStart, removed, data) => {
        if (toStart || removed || !data?.liveEvent) return;
        const deliver = () => { if (ev.getType() === EventType.RoomMessage) cb(ev, room); };
        if (!ev.isEncrypted()) return deliver();
        const settled = () => {
            if (ev.isDecryptionFailure()) {
                onFail(ev);
                ev.once(MatrixEventEvent.Decrypted, settled); // wait for a retry
            } else {
                deliver();
            }
        };
        // decryptEventIfNeeded returns the in-flight decryption promise (or resolves at once).
        client.decryptEventIfNeeded(ev).then(settled, (e) => note("decrypt error", e));
    });
}

async function main() {
    if (!opt.hs || !opt.user || !opt.password) throw new Error("--hs, --user and --password are required");
    if (!opt.echo && (!opt.send || !opt["expect-from"] || !(opt.invite || opt.room)))
        throw new Error("need --send, --expect-from and one of --invite/--room (or --echo)");

    // 1. Password login on a throwaway client, then a real client for the new device.
    const login = await sdk.createClient({ baseUrl: opt.hs, logger: quietLogger }).loginRequest({
        type: "m.login.password",
        identifier: { type: "m.id.user", user: opt.user },
        password: opt.password,
        initial_device_display_name: "synapse-medic e2e jsclient",
    });
    client = sdk.createClient({
        baseUrl: opt.hs, userId: login.user_id, deviceId: login.device_id,
        accessToken: login.access_token, logger: quietLogger,
    });
    note(`logged in as ${login.user_id} device ${login.device_id}`);
    // No IndexedDB in Node: keep the crypto store in memory (fine for a fresh device per run).
    await client.initRustCrypto({ useIndexedDB: false });
    // Element's default: encrypt for unverified devices too (the bot's device is unverified).
    client.getCrypto().globalBlacklistUnverifiedDevices = false;
    note("rust crypto ready");

    // No history in the first sync: we only act on live events, and old encrypted events
    // (keys sent to earlier devices) would just log decryption failures.
    await client.startClient({ initialSyncLimit: 0 });
    await waitFor("first sync", () => client.isInitialSyncComplete(), [ClientEvent.Sync]);
    note("initial sync done");

    if (opt.echo) return runEcho();
    return runRoundtrip();
}

async function runEcho() {
    const me = client.getUserId();
    // Retry: a federated invite can reach us before the inviting server has persisted it,
    // so an instant join may get 403 "not invited" from the remote server; and after our
    // server restarted (a restore), its first requests to the other server may fail. Up to
    // a minute, as a user would click "join" again.
    const join = async (roomId) => {
        const giveUp = Date.now() + 60000;
        for (let i = 1; ; i++) {
            try { await client.joinRoom(roomId); return note(`joined ${roomId}`); } catch (e) {
                if (Date.now() >= giveUp) return note(`join ${roomId} failed after ${i} attempts`, e);
                note(`join ${roomId} attempt ${i} failed (${e.errcode ?? e.message}), retrying`);
                await new Promise((r) => setTimeout(r, Math.min(1000 * i, 5000)));
            }
        }
    };
    // Invites that arrived before/with the initial sync, then new ones.
    for (const r of client.getRooms()) if (r.getMyMembership() === "invite") join(r.roomId);
    client.on(RoomMemberEvent.Membership, (_ev, member) => {
        if (member.userId === me && member.membership === "invite") join(member.roomId);
    });
    onLiveMessage((ev, room) => {
        if (ev.getSender() === me) return;
        const body = ev.getContent().body;
        note(`got ${ev.isEncrypted() ? "encrypted" : "plain"} message from ${ev.getSender()} in ${room.roomId}: ${body}`);
        client.sendMessage(room.roomId, { msgtype: MsgType.Text, body: `echo: ${body}` })
            .catch((e) => note("echo send failed", e));
    }, (ev) => note(`could not decrypt ${ev.getId()} from ${ev.getSender()}`));
    setTimeout(() => { note("echo timeout reached"); shutdown().then(() => process.exit(0)); },
        Math.max(0, deadline - Date.now()));
    return new Promise(() => {}); // run until the timer
}

async function runRoundtrip() {
    const expectFrom = opt["expect-from"];
    let roomId = opt.room;
    const encrypted = !opt.unencrypted;

    if (opt.invite) {
        // 2. Create the room the way Element does for a private (DM-like) encrypted room.
        const res = await client.createRoom({
            preset: Preset.PrivateChat,
            invite: [opt.invite],
            initial_state: encrypted
                ? [{ type: EventType.RoomEncryption, state_key: "", content: { algorithm: "m.megolm.v1.aes-sha2" } }]
                : [],
        });
        roomId = res.room_id;
        note(`created room ${roomId}, waiting for ${opt.invite} to join`);
        await waitFor(`${opt.invite} to join`,
            () => client.getRoom(roomId)?.getMember(opt.invite)?.membership === "join",
            [RoomMemberEvent.Membership, ClientEvent.Room, ClientEvent.Sync]);
        note(`${opt.invite} joined`);
    } else {
        if (client.getRoom(roomId)?.getMyMembership() !== "join") await client.joinRoom(roomId);
    }
    // The room (and its m.room.encryption state) must be known locally, otherwise the SDK
    // would not know to encrypt and would send in the clear.
    const room = await waitFor("room to sync", () => {
        const r = client.getRoom(roomId);
        return r?.getMyMembership() === "join" && (!encrypted || !opt.invite || r.hasEncryptionStateEvent()) && r;
    }, [ClientEvent.Room, ClientEvent.Sync]);
    const roomEncrypted = await client.getCrypto().isEncryptionEnabledInRoom(room.roomId);
    note(`room ready, encryption ${roomEncrypted ? "on" : "off"}`);
    // Never let an "encrypted" test silently pass over a plaintext send.
    if (opt.invite && encrypted && !roomEncrypted) throw new Error("room created encrypted but crypto sees it unencrypted");

    // 4. Listen before sending so a fast reply is not missed; only replies that arrive
    // live after our send count (history from the initial sync is ignored).
    let sentEventId = null;
    let failedReply = null;
    const reply = new Promise((resolve) => {
        onLiveMessage((ev, r) => {
            if (r.roomId === roomId && ev.getSender() === expectFrom && sentEventId !== null) resolve(ev);
        }, (ev) => {
            if (ev.getRoomId() === roomId && ev.getSender() === expectFrom) {
                failedReply = ev;
                note(`reply ${ev.getId()} failed to decrypt (will keep waiting for a retry)`);
            }
        });
    });

    // 3. Send. sentEventId is set to "" first so a reply racing the send response still counts.
    sentEventId = "";
    const sendStart = Date.now();
    const sent = await client.sendMessage(roomId, { msgtype: MsgType.Text, body: opt.send });
    sentEventId = sent.event_id;
    note(`sent ${sentEventId}`);

    const timeout = new Promise((resolve) => setTimeout(() => resolve(null), Math.max(0, deadline - Date.now())));
    const ev = await Promise.race([reply, timeout]);
    const base = { room_id: roomId, sent_event_id: sentEventId };
    if (!ev) {
        if (failedReply) {
            return fail(`reply from ${expectFrom} could not be decrypted`, null, {
                ...base, reply_event_id: failedReply.getId(), reply_body: null,
                reply_was_encrypted: true, reply_decryption_failed: true,
            });
        }
        return fail(`timeout waiting for a reply from ${expectFrom}`, null, base);
    }
    note(`reply after ${Date.now() - sendStart} ms (total ${Date.now() - t0} ms)`);
    finish({
        ...base,
        reply_event_id: ev.getId(),
        reply_body: ev.getContent().body ?? null,
        reply_was_encrypted: ev.isEncrypted(),
        reply_decryption_failed: ev.isDecryptionFailure(),
    }, 0);
}

main().catch((e) => fail("roundtrip failed", e));
