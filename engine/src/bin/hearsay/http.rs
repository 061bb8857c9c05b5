//! The agent's HTTP endpoint: metrics, health, debug views and the JSON API the client
//! subcommands use. It runs on its own threads; every engine call it makes is a lock-free
//! snapshot read or a query answered by the node's shard, so the packet path is untouched.

use std::collections::BinaryHeap;
use std::io::Read;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::Sender;
use std::time::Instant;

use hearsay::crdt::{Kind, Op, Value};
use hearsay::engine::{Engine, EngineError};
use hearsay::membership::Member;
use hearsay::replication::ReplicationError;
use serde_json::{json, Value as Json};
use tiny_http::{Header, Method, Request, Response, Server};

use crate::agent::Stop;
use crate::json;
use crate::metrics;

/// Largest request body read (a CRDT value is at most 1 KiB).
const MAX_BODY: usize = 64 * 1024;

/// Most keys one `/debug/crdt` page lists.
const MAX_PAGE: usize = 1000;

/// What the handlers share.
pub(crate) struct Ctx<'a> {
    pub(crate) engine: &'a Engine,
    pub(crate) stop: Sender<Stop>,
    pub(crate) event_log_lagged: Option<&'a AtomicU64>,
    pub(crate) leaving: &'a AtomicBool,
}

/// An answer, before it becomes a tiny_http response.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) content_type: &'static str,
    pub(crate) body: Vec<u8>,
    allow: Option<&'static str>,
}

impl Reply {
    fn json(status: u16, body: &Json) -> Self {
        let mut text = body.to_string();
        text.push('\n');
        Self {
            status,
            content_type: "application/json",
            body: text.into_bytes(),
            allow: None,
        }
    }

    fn ok(body: &Json) -> Self {
        Self::json(200, body)
    }

    fn error(status: u16, msg: impl Into<String>) -> Self {
        Self::json(status, &json!({ "error": msg.into() }))
    }

    fn method_not_allowed(allow: &'static str) -> Self {
        let mut r = Self::error(405, format!("method not allowed; use {allow}"));
        r.allow = Some(allow);
        r
    }
}

/// Answer requests until the server is unblocked with `stopping` set.
pub(crate) fn serve(server: &Server, ctx: &Ctx<'_>, stopping: &AtomicBool) {
    loop {
        let mut rq = match server.recv() {
            Ok(rq) => rq,
            Err(_) if stopping.load(Ordering::Relaxed) => return,
            Err(_) => continue,
        };
        let method = rq.method().clone();
        let url = rq.url().to_string();
        let body = read_body(&mut rq);
        // A handler bug answers 500 and leaves the server running.
        let reply = catch_unwind(AssertUnwindSafe(|| match body {
            Ok(body) => handle(ctx, &method, &url, &body),
            Err(r) => r,
        }))
        .unwrap_or_else(|_| Reply::error(500, "internal error"));
        let _ = rq.respond(to_response(reply));
    }
}

fn read_body(rq: &mut Request) -> Result<Vec<u8>, Reply> {
    if rq.body_length().is_some_and(|n| n > MAX_BODY) {
        return Err(Reply::error(
            413,
            format!("request body over {MAX_BODY} bytes"),
        ));
    }
    let mut body = Vec::new();
    match rq
        .as_reader()
        .take(MAX_BODY as u64 + 1)
        .read_to_end(&mut body)
    {
        Ok(_) if body.len() > MAX_BODY => Err(Reply::error(
            413,
            format!("request body over {MAX_BODY} bytes"),
        )),
        Ok(_) => Ok(body),
        Err(e) => Err(Reply::error(400, format!("cannot read the body: {e}"))),
    }
}

fn to_response(r: Reply) -> Response<std::io::Cursor<Vec<u8>>> {
    let mut resp = Response::from_data(r.body).with_status_code(r.status);
    if let Ok(h) = Header::from_bytes("Content-Type", r.content_type) {
        resp = resp.with_header(h);
    }
    if let Some(allow) = r.allow {
        if let Ok(h) = Header::from_bytes("Allow", allow) {
            resp = resp.with_header(h);
        }
    }
    resp
}

/// Route one request.
pub(crate) fn handle(ctx: &Ctx<'_>, method: &Method, url: &str, body: &[u8]) -> Reply {
    let (path, query) = url.split_once('?').unwrap_or((url, ""));
    let get = matches!(method, Method::Get | Method::Head);
    let post = *method == Method::Post;
    let need = |ok: bool, allow: &'static str, f: &dyn Fn() -> Reply| {
        if ok {
            f()
        } else {
            Reply::method_not_allowed(allow)
        }
    };
    if let Some(key) = path.strip_prefix("/v1/kv/") {
        return with_key(key, |key| match method {
            Method::Get | Method::Head => kv_get(ctx, &key),
            Method::Put | Method::Post => kv_set(ctx, &key, body),
            _ => Reply::method_not_allowed("GET, PUT"),
        });
    }
    if let Some(key) = path.strip_prefix("/v1/lookup/") {
        return need(get, "GET", &|| {
            with_key(key, |key| lookup(ctx, &key, query))
        });
    }
    for (prefix, incr) in [("/v1/incr/", true), ("/v1/decr/", false)] {
        if let Some(key) = path.strip_prefix(prefix) {
            return need(post, "POST", &|| {
                with_key(key, |key| add(ctx, &key, query, incr))
            });
        }
    }
    match path {
        "/" => need(get, "GET", &index),
        "/metrics" => need(get, "GET", &|| metrics_page(ctx)),
        "/health" => need(get, "GET", &|| health(ctx)),
        "/ready" => need(get, "GET", &|| ready(ctx)),
        "/version" => need(get, "GET", &|| Reply::ok(&version_json())),
        "/debug/view" => need(get, "GET", &|| debug_view(ctx)),
        "/debug/crdt" => need(get, "GET", &|| debug_crdt(ctx, query)),
        "/v1/members" => need(get, "GET", &|| members(ctx)),
        "/v1/drain" => need(post, "POST", &|| command("drain", ctx.engine.drain())),
        "/v1/undrain" => need(post, "POST", &|| command("undrain", ctx.engine.undrain())),
        "/v1/leave" => need(post, "POST", &|| leave(ctx)),
        _ => Reply::error(404, format!("no such endpoint: {path}")),
    }
}

/// Decode a key from its path segment and run `f` on it.
fn with_key(raw: &str, f: impl FnOnce(Vec<u8>) -> Reply) -> Reply {
    match json::decode_component(raw) {
        Some(k) if k.is_empty() => Reply::error(400, "empty key"),
        Some(k) if k.len() > hearsay::codec::MAX_CRDT_KEY_LEN => Reply::error(
            400,
            format!(
                "key of {} bytes, at most {}",
                k.len(),
                hearsay::codec::MAX_CRDT_KEY_LEN
            ),
        ),
        Some(k) => f(k),
        None => Reply::error(400, "malformed percent-encoding in the key"),
    }
}

/// One query parameter, decoded; `Err` for a malformed encoding.
fn param(query: &str, name: &str) -> Result<Option<String>, Reply> {
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if k == name {
            let v = json::decode_component(v)
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| Reply::error(400, format!("malformed query parameter `{name}`")))?;
            return Ok(Some(v));
        }
    }
    Ok(None)
}

/// A numeric query parameter in `range`, or `default`.
fn num_param(
    query: &str,
    name: &str,
    default: u64,
    range: std::ops::RangeInclusive<u64>,
) -> Result<u64, Reply> {
    match param(query, name)? {
        None => Ok(default),
        Some(v) => match v.parse::<u64>() {
            Ok(n) if range.contains(&n) => Ok(n),
            _ => Err(Reply::error(
                400,
                format!(
                    "query parameter `{name}` must be an integer in {}..={}, got {v:?}",
                    range.start(),
                    range.end()
                ),
            )),
        },
    }
}

/// An engine error as an HTTP status and message.
fn engine_error(e: &EngineError) -> Reply {
    use hearsay::crdt::CrdtError;
    let status = match e {
        EngineError::Timeout(_) => 503,
        EngineError::Replication(ReplicationError::Stopped) => 503,
        EngineError::Replication(ReplicationError::Crdt(
            CrdtError::KindMismatch { .. } | CrdtError::WrongOp { .. },
        )) => 409,
        EngineError::Replication(_) => 400,
        _ => 500,
    };
    Reply::error(status, e.to_string())
}

fn index() -> Reply {
    Reply::ok(&json!({
        "endpoints": [
            "GET /metrics", "GET /health", "GET /ready", "GET /version",
            "GET /debug/view", "GET /debug/crdt?limit=N&after=HEXKEY",
            "GET /v1/members", "GET /v1/lookup/{key}?replicas=N",
            "GET /v1/kv/{key}", "PUT /v1/kv/{key}",
            "POST /v1/incr/{key}?by=N", "POST /v1/decr/{key}?by=N",
            "POST /v1/drain", "POST /v1/undrain", "POST /v1/leave",
        ]
    }))
}

pub(crate) fn version_json() -> Json {
    use hearsay::build::*;
    json!({
        "version": VERSION,
        "commit": GIT_COMMIT,
        "build_date": BUILD_DATE,
        "target": TARGET,
        "profile": PROFILE,
        "features": FEATURES.split(',').filter(|f| !f.is_empty()).collect::<Vec<_>>(),
        "rustc": RUSTC,
    })
}

fn metrics_page(ctx: &Ctx<'_>) -> Reply {
    let lagged = ctx.event_log_lagged.map(|l| l.load(Ordering::Relaxed));
    match metrics::collect(ctx.engine, lagged) {
        Ok(snap) => Reply {
            status: 200,
            content_type: metrics::CONTENT_TYPE,
            body: metrics::render(&snap).into_bytes(),
            allow: None,
        },
        Err(e) => engine_error(&e),
    }
}

fn health(ctx: &Ctx<'_>) -> Reply {
    match ctx.engine.inspect(|n| n.is_stopped()) {
        Ok(false) if !ctx.leaving.load(Ordering::Relaxed) => Reply::ok(&json!({ "status": "ok" })),
        Ok(_) => Reply::json(503, &json!({ "status": "stopping" })),
        Err(e) => Reply::json(
            503,
            &json!({ "status": "unresponsive", "error": e.to_string() }),
        ),
    }
}

fn ready(ctx: &Ctx<'_>) -> Reply {
    match ctx.engine.inspect(|n| (n.is_joined(), n.local().drained)) {
        Ok((joined, drained)) => {
            let ready = joined && !drained && !ctx.leaving.load(Ordering::Relaxed);
            Reply::json(
                if ready { 200 } else { 503 },
                &json!({ "ready": ready, "joined": joined, "drained": drained }),
            )
        }
        Err(e) => Reply::json(503, &json!({ "ready": false, "error": e.to_string() })),
    }
}

fn members(ctx: &Ctx<'_>) -> Reply {
    let local = ctx.engine.local().map(|m| m.id);
    let members = ctx.engine.members();
    let list: Vec<Json> = members
        .iter()
        .map(|m| json::member(m, Some(m.id) == local))
        .collect();
    Reply::ok(&json!({
        "local": local.map(|id| id.to_string()),
        "members": list,
    }))
}

fn lookup(ctx: &Ctx<'_>, key: &[u8], query: &str) -> Reply {
    let n = match num_param(query, "replicas", 1, 1..=64) {
        Ok(n) => n as usize,
        Err(r) => return r,
    };
    let snap = ctx.engine.router().load();
    let mut ids = Vec::new();
    snap.replicas(key, n, &mut ids);
    let nodes = snap.nodes();
    let replicas: Vec<Json> = ids
        .iter()
        .map(|id| {
            let addr = nodes
                .iter()
                .find(|nd| nd.id == *id)
                .map(|nd| nd.name.clone());
            json!({ "id": id.to_string(), "addr": addr })
        })
        .collect();
    Reply::ok(&json!({
        "key": json::bytes(key),
        "owner": replicas.first().cloned(),
        "replicas": replicas,
        "placement_version": snap.version(),
        "placement_members": nodes.len(),
    }))
}

fn value_reply(key: &[u8], v: &Value) -> Json {
    json!({
        "key": json::bytes(key),
        "kind": v.kind().name(),
        "value": json::value(v),
    })
}

fn kv_get(ctx: &Ctx<'_>, key: &[u8]) -> Reply {
    match ctx.engine.get(key) {
        Ok(Some(v)) => Reply::ok(&value_reply(key, &v)),
        Ok(None) => Reply::error(
            404,
            format!("no such key: {}", json::bytes_text(&json::bytes(key))),
        ),
        Err(e) => engine_error(&e),
    }
}

fn kv_set(ctx: &Ctx<'_>, key: &[u8], body: &[u8]) -> Reply {
    let op = Op::Write(body.to_vec());
    match ctx
        .engine
        .update(key, Kind::LwwRegister, op)
        .and_then(|()| ctx.engine.get(key))
    {
        Ok(Some(v)) => Reply::ok(&value_reply(key, &v)),
        Ok(None) => Reply::error(500, "the value vanished after the write"),
        Err(e) => engine_error(&e),
    }
}

/// Add to (or subtract from) a counter. A new key becomes a PN-counter; an existing
/// grow-only counter takes increments.
fn add(ctx: &Ctx<'_>, key: &[u8], query: &str, incr: bool) -> Reply {
    let by = match num_param(query, "by", 1, 0..=u64::MAX) {
        Ok(n) => n,
        Err(r) => return r,
    };
    let kind = match ctx.engine.get(key) {
        Ok(Some(v)) => v.kind(),
        Ok(None) => Kind::PNCounter,
        Err(e) => return engine_error(&e),
    };
    let op = if incr { Op::Incr(by) } else { Op::Decr(by) };
    match ctx
        .engine
        .update(key, kind, op)
        .and_then(|()| ctx.engine.get(key))
    {
        Ok(Some(v)) => Reply::ok(&value_reply(key, &v)),
        Ok(None) => Reply::error(500, "the value vanished after the update"),
        Err(e) => engine_error(&e),
    }
}

fn command(what: &str, r: Result<(), EngineError>) -> Reply {
    match r {
        Ok(()) => Reply::ok(&json!({ "ok": true, "command": what })),
        Err(e) => engine_error(&e),
    }
}

fn leave(ctx: &Ctx<'_>) -> Reply {
    if ctx.leaving.swap(true, Ordering::Relaxed) {
        return Reply::json(
            202,
            &json!({ "ok": true, "command": "leave", "already": true }),
        );
    }
    if ctx.stop.send(Stop::Leave).is_err() {
        return Reply::error(503, "the agent is already stopping");
    }
    Reply::json(202, &json!({ "ok": true, "command": "leave" }))
}

/// What the node believes, read on its shard in one query.
struct View {
    local: Member,
    members: Vec<Member>,
    suspicions: Vec<(hearsay::placement::NodeId, std::time::Duration, usize)>,
    joined: bool,
    stopped: bool,
    local_health: u32,
    pending_broadcasts: usize,
    placement: Option<hearsay::node::PlacementConfig>,
    crdt_keys: usize,
    crdt_buffered: usize,
    crdt_hash: u64,
    neighbours: Vec<hearsay::placement::NodeId>,
}

fn debug_view(ctx: &Ctx<'_>) -> Reply {
    let view = ctx.engine.inspect(|n| {
        let now = Instant::now();
        let mut members: Vec<Member> = n.members().map(|m| m.to_member()).collect();
        members.sort_by_key(|m| m.id);
        let mut suspicions: Vec<_> = n
            .suspicions()
            .map(|(id, deadline, accusers)| (id, deadline.saturating_duration_since(now), accusers))
            .collect();
        suspicions.sort_by_key(|s| s.0);
        View {
            local: n.local().to_member(),
            members,
            suspicions,
            joined: n.is_joined(),
            stopped: n.is_stopped(),
            local_health: n.local_health(),
            pending_broadcasts: n.pending_broadcasts(),
            placement: n.config().placement,
            crdt_keys: n.crdt_store().len(),
            crdt_buffered: n.crdt_store().buffered(),
            crdt_hash: n.crdt_store().state_hash(),
            neighbours: n.crdt_neighbours().collect(),
        }
    });
    let v = match view {
        Ok(v) => v,
        Err(e) => return engine_error(&e),
    };
    let snap = ctx.engine.router().load();
    let members: Vec<Json> = v
        .members
        .iter()
        .map(|m| {
            let mut j = json::member(m, m.id == v.local.id);
            if let Some((_, left, accusers)) = v.suspicions.iter().find(|s| s.0 == m.id) {
                j["suspicion"] = json!({
                    "confirm_in_ms": left.as_millis() as u64,
                    "accusers": accusers,
                });
            }
            if let Some(a) = m.accuser {
                j["accuser"] = Json::String(a.to_string());
            }
            j
        })
        .collect();
    let suspicions: Vec<Json> = v
        .suspicions
        .iter()
        .map(|(id, left, accusers)| {
            json!({
                "id": id.to_string(),
                "confirm_in_ms": left.as_millis() as u64,
                "accusers": accusers,
            })
        })
        .collect();
    Reply::ok(&json!({
        "node": {
            "id": v.local.id.to_string(),
            "addr": v.local.addr.to_string(),
            "incarnation": v.local.incarnation,
            "status": json::status(v.local.status),
            "drained": v.local.drained,
            "joined": v.joined,
            "stopped": v.stopped,
            "local_health": v.local_health,
            "pending_broadcasts": v.pending_broadcasts,
        },
        "members": members,
        "suspicions": suspicions,
        "placement": {
            "scheme": v.placement.map(|p| p.scheme.to_string()),
            "seed": v.placement.map(|p| p.seed),
            "version": snap.version(),
            "members": snap.nodes().len(),
        },
        "crdt": {
            "keys": v.crdt_keys,
            "buffered_deltas": v.crdt_buffered,
            "state_hash": format!("{:016x}", v.crdt_hash),
            "neighbours": v.neighbours.iter().map(|id| id.to_string()).collect::<Vec<_>>(),
        },
    }))
}

/// Keys in byte order, `limit` a page, after the key `after` (hex) if given.
fn debug_crdt(ctx: &Ctx<'_>, query: &str) -> Reply {
    let limit = match num_param(query, "limit", 100, 1..=MAX_PAGE as u64) {
        Ok(n) => n as usize,
        Err(r) => return r,
    };
    let after = match param(query, "after") {
        Ok(None) => None,
        Ok(Some(h)) => match json::unhex(&h) {
            Some(k) => Some(k),
            None => return Reply::error(400, "query parameter `after` must be a key in hex"),
        },
        Err(r) => return r,
    };
    let page = ctx.engine.inspect(move |n| {
        let store = n.crdt_store();
        // The `limit` smallest keys after the cursor: a max-heap evicts the largest.
        let mut heap: BinaryHeap<&[u8]> = BinaryHeap::with_capacity(limit + 1);
        let mut after_cursor = 0usize;
        for p in store.partitions() {
            for (k, _) in p.range_entries_where(|_| true) {
                if after.as_deref().is_some_and(|a| k.as_slice() <= a) {
                    continue;
                }
                after_cursor += 1;
                heap.push(k);
                if heap.len() > limit {
                    heap.pop();
                }
            }
        }
        let keys = heap.into_sorted_vec();
        let entries: Vec<(Vec<u8>, Value)> = keys
            .iter()
            .filter_map(|k| store.get(k).map(|v| (k.to_vec(), v.clone())))
            .collect();
        (store.len(), after_cursor, entries)
    });
    let (total, remaining, entries) = match page {
        Ok(p) => p,
        Err(e) => return engine_error(&e),
    };
    let next = (remaining > entries.len())
        .then(|| entries.last().map(|(k, _)| json::hex(k)))
        .flatten();
    let keys: Vec<Json> = entries
        .iter()
        .map(|(k, v)| {
            let mut j = value_reply(k, v);
            j["key_hex"] = Json::String(json::hex(k));
            j
        })
        .collect();
    Reply::ok(&json!({ "total": total, "keys": keys, "next": next }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hearsay::node::Preset;
    use hearsay::runtime::BackendChoice;

    fn engine() -> Engine {
        Engine::builder()
            .bind("127.0.0.1:0".parse().unwrap())
            .cluster("http-test")
            .preset(Preset::Local)
            .backend(BackendChoice::Portable)
            .start()
            .unwrap()
    }

    fn body(r: &Reply) -> Json {
        serde_json::from_slice(&r.body).unwrap()
    }

    #[test]
    fn routes_answer_and_bad_requests_get_4xx_json() {
        let engine = engine();
        let (tx, rx) = std::sync::mpsc::channel();
        let leaving = AtomicBool::new(false);
        let ctx = Ctx {
            engine: &engine,
            stop: tx,
            event_log_lagged: None,
            leaving: &leaving,
        };
        let call = |m: Method, url: &str, b: &[u8]| handle(&ctx, &m, url, b);

        let r = call(Method::Put, "/v1/kv/greet%20ing", b"hello");
        assert_eq!(r.status, 200, "{:?}", body(&r));
        let r = call(Method::Get, "/v1/kv/greet%20ing", b"");
        assert_eq!(body(&r)["value"], "hello");
        assert_eq!(body(&r)["kind"], "lwwregister");
        let r = call(Method::Post, "/v1/incr/hits?by=5", b"");
        assert_eq!(body(&r)["value"], 5);
        let r = call(Method::Post, "/v1/decr/hits?by=7", b"");
        assert_eq!(body(&r)["value"], -2);
        // Wrong kind: a conflict, and nothing changes.
        let r = call(Method::Post, "/v1/incr/greet%20ing", b"");
        assert_eq!(r.status, 409, "{:?}", body(&r));
        let r = call(Method::Get, "/v1/lookup/anything?replicas=3", b"");
        let me = engine.local().unwrap();
        assert_eq!(body(&r)["owner"]["id"], me.id.to_string());
        assert_eq!(body(&r)["owner"]["addr"], me.addr.to_string());
        let r = call(Method::Get, "/debug/crdt?limit=1", b"");
        let page = body(&r);
        assert_eq!(page["total"], 2);
        assert_eq!(page["keys"].as_array().unwrap().len(), 1);
        assert_eq!(page["keys"][0]["key"], "greet ing");
        let next = page["next"].as_str().unwrap().to_string();
        let r = call(
            Method::Get,
            &format!("/debug/crdt?limit=5&after={next}"),
            b"",
        );
        let page = body(&r);
        assert_eq!(page["keys"][0]["key"], "hits");
        assert_eq!(page["next"], Json::Null);
        let r = call(Method::Get, "/debug/view", b"");
        assert_eq!(body(&r)["node"]["id"], me.id.to_string());
        assert_eq!(body(&r)["crdt"]["keys"], 2);
        assert_eq!(call(Method::Get, "/health", b"").status, 200);
        assert_eq!(call(Method::Get, "/ready", b"").status, 200);
        let r = call(Method::Get, "/metrics", b"");
        assert_eq!(r.status, 200);
        assert_eq!(r.content_type, metrics::CONTENT_TYPE);

        for (m, url, status) in [
            (Method::Get, "/nope", 404),
            (Method::Get, "/v1/kv/missing", 404),
            (Method::Get, "/v1/kv/", 400),
            (Method::Get, "/v1/kv/%zz", 400),
            (Method::Delete, "/v1/kv/x", 405),
            (Method::Get, "/v1/drain", 405),
            (Method::Post, "/metrics", 405),
            (Method::Get, "/v1/lookup/k?replicas=0", 400),
            (Method::Get, "/v1/lookup/k?replicas=abc", 400),
            (Method::Post, "/v1/incr/k?by=-1", 400),
            (Method::Get, "/debug/crdt?after=xyz", 400),
            (Method::Get, "/debug/crdt?limit=100000", 400),
        ] {
            let r = call(m.clone(), url, b"");
            assert_eq!(r.status, status, "{m} {url}");
            assert!(body(&r)["error"].is_string(), "{m} {url}");
        }
        let long_key = format!("/v1/kv/{}", "k".repeat(2000));
        assert_eq!(call(Method::Get, &long_key, b"").status, 400);
        let r = call(Method::Put, "/v1/kv/big", &[b'x'; 5000]);
        assert_eq!(r.status, 400, "{:?}", body(&r));

        // Drain: not ready any more.
        assert_eq!(call(Method::Post, "/v1/drain", b"").status, 200);
        let until = Instant::now() + std::time::Duration::from_secs(10);
        while call(Method::Get, "/ready", b"").status != 503 {
            assert!(Instant::now() < until, "still ready after drain");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        // Leave hands the stop to the agent once.
        assert_eq!(call(Method::Post, "/v1/leave", b"").status, 202);
        assert_eq!(call(Method::Post, "/v1/leave", b"").status, 202);
        assert!(matches!(rx.try_recv(), Ok(Stop::Leave)));
        assert!(rx.try_recv().is_err());
        assert_eq!(call(Method::Get, "/health", b"").status, 503);
        drop(ctx);
        engine.shutdown().unwrap();
    }
}
