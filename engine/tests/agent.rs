//! The `hearsay` binary as users run it: agents as real processes on loopback, driven by
//! the client subcommands (also real processes) and scraped over HTTP.
//!
//! Every wait polls with a generous deadline; nothing asserts on a fixed sleep. Agents
//! use the `local` preset (periods of 200 ms) and the portable backend, and are killed
//! when a test ends, passing or failing.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value as Json;

const BIN: &str = env!("CARGO_BIN_EXE_hearsay");
const DEADLINE: Duration = Duration::from_secs(30);

fn wait_for(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let until = Instant::now() + timeout;
    loop {
        if ok() {
            return;
        }
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A fresh directory for one test's files.
fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("hearsay-agent-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// One agent process.
struct Agent {
    name: String,
    child: Child,
    gossip: SocketAddr,
    http: SocketAddr,
    stderr: PathBuf,
}

impl Agent {
    /// Start `hearsay agent` with `args` (after the common ones) and wait until it prints
    /// its gossip and HTTP addresses.
    fn start(dir: &Path, name: &str, args: &[&str]) -> Agent {
        let stderr = dir.join(format!("{name}.err"));
        let mut child = Command::new(BIN)
            .arg("agent")
            .args(["--http", "127.0.0.1:0", "--preset", "local"])
            .args(["--backend", "portable", "--leave-timeout", "10"])
            .args(args)
            .env_remove("HEARSAY_AGENT")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let (mut gossip, mut http) = (None, None);
        let until = Instant::now() + DEADLINE;
        while gossip.is_none() || http.is_none() {
            let left = until.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left.min(Duration::from_millis(200))) {
                Ok(line) => {
                    let mut parts = line.split_whitespace();
                    match (parts.next(), parts.next()) {
                        (Some("gossip"), Some(a)) => gossip = a.parse().ok(),
                        (Some("http"), Some(a)) => http = a.parse().ok(),
                        _ => {}
                    }
                }
                Err(_) => {
                    if let Ok(Some(status)) = child.try_wait() {
                        panic!(
                            "agent {name} exited ({status}) at start: {}",
                            std::fs::read_to_string(&stderr).unwrap_or_default()
                        );
                    }
                    assert!(Instant::now() < until, "agent {name} did not start");
                }
            }
        }
        Agent {
            name: name.into(),
            child,
            gossip: gossip.unwrap(),
            http: http.unwrap(),
            stderr,
        }
    }

    /// Run a client subcommand against this agent.
    fn cli(&self, args: &[&str]) -> Output {
        cli(&self.http.to_string(), args)
    }

    /// Run a client subcommand that must succeed; its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "{} {args:?}: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn json(&self, args: &[&str]) -> Json {
        let mut args = args.to_vec();
        args.push("--json");
        serde_json::from_str(&self.ok(&args)).unwrap()
    }

    /// `members --json` as (id → (status, incarnation)).
    fn members(&self) -> Vec<(String, String, u64)> {
        self.json(&["members"])["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m["id"].as_str().unwrap().to_string(),
                    m["status"].as_str().unwrap().to_string(),
                    m["incarnation"].as_u64().unwrap(),
                )
            })
            .collect()
    }

    fn status_of(&self, id: &str) -> Option<(String, u64)> {
        self.members()
            .into_iter()
            .find(|m| m.0 == id)
            .map(|m| (m.1, m.2))
    }

    fn id(&self) -> String {
        self.json(&["members"])["local"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// Placement's owners of `key`, as ids.
    fn owners(&self, key: &str, n: usize) -> Vec<String> {
        self.json(&["lookup", key, "--replicas", &n.to_string()])["replicas"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_string())
            .collect()
    }

    fn get(&self, key: &str) -> Option<Json> {
        let out = self.cli(&["get", key, "--json"]);
        if !out.status.success() {
            return None;
        }
        let j: Json = serde_json::from_slice(&out.stdout).unwrap();
        Some(j["value"].clone())
    }

    fn scrape(&self) -> prometheus_parse::Scrape {
        let (status, body) = http_get(self.http, "/metrics");
        assert_eq!(status, 200, "{body}");
        prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).unwrap()
    }

    /// Wait for the process to exit by itself; its exit code.
    fn wait_exit(&mut self, timeout: Duration) -> i32 {
        let until = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            assert!(
                Instant::now() < until,
                "agent {} did not exit: {}",
                self.name,
                std::fs::read_to_string(&self.stderr).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on the pid of a child this test spawned and has not reaped (it
        // is reaped only by `wait_exit` or the guard's `wait`), so the pid is still ours.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, sig) };
        assert_eq!(rc, 0);
    }
}

/// Kills every agent still running when the test ends, however it ends.
#[derive(Default)]
struct Guard(Vec<Agent>);

impl Guard {
    fn add(&mut self, a: Agent) -> usize {
        self.0.push(a);
        self.0.len() - 1
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        for a in &mut self.0 {
            let _ = a.child.kill();
            let _ = a.child.wait();
        }
    }
}

fn cli(agent: &str, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .args(["--agent", agent])
        .env_remove("HEARSAY_AGENT")
        .output()
        .unwrap()
}

/// A minimal HTTP/1.1 GET: status and body.
fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, body.to_string())
}

fn sample(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    let s = scrape
        .samples
        .iter()
        .find(|s| {
            s.metric == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(k).is_some_and(|x| x == *v))
        })
        .unwrap_or_else(|| panic!("no sample {name}{labels:?}"));
    match s.value {
        prometheus_parse::Value::Counter(v)
        | prometheus_parse::Value::Gauge(v)
        | prometheus_parse::Value::Untyped(v) => v,
        ref other => panic!("{name}: {other:?}"),
    }
}

fn stderr_lines(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn a_cluster_of_agents_joins_replicates_drains_detects_failure_and_rejoins() {
    let dir = temp_dir("cluster");
    let cluster = format!("agent-test-{}", std::process::id());
    let log = dir.join("a-events.jsonl");
    let mut g = Guard::default();
    let a = g.add(Agent::start(
        &dir,
        "a",
        &[
            "--bind",
            "127.0.0.1:0",
            "--cluster",
            &cluster,
            "--event-log",
            log.to_str().unwrap(),
        ],
    ));
    let seed = g.0[a].gossip.to_string();
    let join = [
        "--bind",
        "127.0.0.1:0",
        "--cluster",
        &cluster,
        "--join",
        &seed,
    ];
    let b = g.add(Agent::start(&dir, "b", &join));
    let c = g.add(Agent::start(&dir, "c", &join));
    let d = g.add(Agent::start(&dir, "d", &join));
    let all = [a, b, c, d];

    wait_for("four live members everywhere", DEADLINE, || {
        all.iter().all(|&i| {
            let m = g.0[i].members();
            m.len() == 4 && m.iter().all(|m| m.1 == "alive")
        })
    });
    let ids: Vec<String> = all.iter().map(|&i| g.0[i].id()).collect();
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 4);

    // Replicated state through the CLI: a register and a counter written on several nodes.
    assert_eq!(
        g.0[a].ok(&["set", "greeting", "hello"]),
        "greeting = hello\n"
    );
    g.0[b].ok(&["incr", "hits", "5"]);
    g.0[c].ok(&["incr", "hits", "2"]);
    g.0[d].ok(&["decr", "hits"]);
    wait_for("the writes to replicate", DEADLINE, || {
        all.iter().all(|&i| {
            g.0[i].get("greeting") == Some(Json::from("hello"))
                && g.0[i].get("hits") == Some(Json::from(6))
        })
    });
    assert_eq!(g.0[d].ok(&["get", "hits"]), "6\n");
    let missing = g.0[a].cli(&["get", "no-such-key"]);
    assert!(!missing.status.success());
    assert_eq!(stderr_lines(&missing).len(), 1);

    // Placement agrees, and covers all four.
    let keys: Vec<String> = (0..20).map(|i| format!("user:{i}")).collect();
    wait_for("placement over four members everywhere", DEADLINE, || {
        all.iter().all(|&i| g.0[i].owners("user:0", 4).len() == 4)
    });
    for k in &keys[..5] {
        assert_eq!(g.0[a].owners(k, 1), g.0[b].owners(k, 1), "{k}");
    }

    // Drain c: lookups stop returning it, it is still a live member, and it is not ready.
    let c_id = ids[2].clone();
    assert_eq!(http_get(g.0[c].http, "/ready").0, 200);
    g.0[c].ok(&["drain"]);
    wait_for("the drained node to leave placement", DEADLINE, || {
        [a, b, d].iter().all(|&i| {
            let owners = g.0[i].owners("user:0", 4);
            owners.len() == 3 && !owners.contains(&c_id)
        })
    });
    for k in &keys {
        assert!(!g.0[a].owners(k, 2).contains(&c_id), "{k}");
    }
    assert_eq!(g.0[a].status_of(&c_id).unwrap().0, "alive");
    assert_eq!(http_get(g.0[c].http, "/ready").0, 503);
    g.0[c].ok(&["undrain"]);
    wait_for("the node to return to placement", DEADLINE, || {
        g.0[a].owners("user:0", 4).contains(&c_id)
    });

    // SIGKILL d: the others declare it dead, in the CLI and in /metrics.
    let d_id = ids[3].clone();
    let d_gossip = g.0[d].gossip;
    let (_, inc_before) = g.0[a].status_of(&d_id).unwrap();
    g.0[d].child.kill().unwrap();
    g.0[d].child.wait().unwrap();
    wait_for("the killed node to be declared dead", DEADLINE, || {
        [a, b, c]
            .iter()
            .all(|&i| g.0[i].status_of(&d_id).is_some_and(|s| s.0 == "dead"))
    });
    wait_for("/metrics to show three alive, one dead", DEADLINE, || {
        let s = g.0[a].scrape();
        sample(&s, "hearsay_members", &[("state", "alive")]) == 3.0
            && sample(&s, "hearsay_members", &[("state", "dead")]) == 1.0
            && sample(&s, "hearsay_placement_members", &[]) == 3.0
    });
    let s = g.0[a].scrape();
    assert_eq!(
        sample(
            &s,
            "hearsay_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
    assert_eq!(
        sample(
            &s,
            "hearsay_runtime_backend_info",
            &[("backend", "portable")]
        ),
        1.0
    );
    assert_eq!(sample(&s, "hearsay_joined", &[]), 1.0);
    assert!(sample(&s, "hearsay_probes_total", &[]) > 0.0);
    assert!(sample(&s, "hearsay_messages_received_total", &[("type", "ping")]) > 0.0);
    assert!(sample(&s, "hearsay_messages_sent_total", &[("type", "ack")]) > 0.0);
    assert!(
        sample(
            &s,
            "hearsay_message_bytes_sent_total",
            &[("type", "member")]
        ) > 0.0
    );
    assert!(sample(&s, "hearsay_crdt_keys", &[]) == 2.0);
    assert!(sample(&s, "hearsay_placement_version", &[]) > 1.0);
    assert!(
        sample(
            &s,
            "hearsay_runtime_datagrams_received_total",
            &[("shard", "0")]
        ) > 0.0
    );
    assert_eq!(
        sample(&s, "hearsay_runtime_queue_depth", &[("shard", "0")]),
        0.0
    );
    let suspicions: f64 = [a, b, c]
        .iter()
        .map(|&i| sample(&g.0[i].scrape(), "hearsay_suspicions_total", &[]))
        .sum();
    assert!(suspicions >= 1.0, "nobody suspected the killed node");
    for (name, _) in s.docs.iter() {
        assert!(name.starts_with("hearsay_"), "{name}");
    }

    // Restart d at the same address: it rejoins, alive, with a higher incarnation.
    let d_bind = d_gossip.to_string();
    let d2 = g.add(Agent::start(
        &dir,
        "d2",
        &["--bind", &d_bind, "--cluster", &cluster, "--join", &seed],
    ));
    assert_eq!(g.0[d2].gossip, d_gossip);
    wait_for("the restarted node to be alive again", DEADLINE, || {
        [a, b, c].iter().all(|&i| {
            g.0[i]
                .status_of(&d_id)
                .is_some_and(|(s, inc)| s == "alive" && inc > inc_before)
        })
    });
    assert_eq!(g.0[d2].id(), d_id);

    // `hearsay leave`: b announces its departure and exits 0; the others see it left.
    let b_id = ids[1].clone();
    g.0[b].ok(&["leave"]);
    assert_eq!(g.0[b].wait_exit(DEADLINE), 0);
    // SIGTERM: c leaves the same way.
    g.0[c].signal(libc::SIGTERM);
    assert_eq!(g.0[c].wait_exit(DEADLINE), 0);
    wait_for("the departures to be known", DEADLINE, || {
        [a, d2].iter().all(|&i| {
            g.0[i].status_of(&b_id).is_some_and(|s| s.0 == "left")
                && g.0[i].status_of(&c_id).is_some_and(|s| s.0 == "left")
        })
    });

    // SIGINT on a: it leaves, and its event log recorded the story.
    g.0[a].signal(libc::SIGINT);
    assert_eq!(g.0[a].wait_exit(DEADLINE), 0);
    let events: Vec<Json> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let has = |event: &str, id: &str| {
        events
            .iter()
            .any(|e| e["event"] == event && e["id"] == id && e["time"].is_string())
    };
    assert!(has("member_joined", &d_id), "{events:?}");
    assert!(has("failed", &d_id), "{events:?}");
    assert!(has("drained", &c_id), "{events:?}");
    assert!(has("left", &b_id), "{events:?}");
    assert!(has("left", &ids[0]), "its own departure: {events:?}");
    let failed = events.iter().find(|e| e["event"] == "failed").unwrap();
    assert_eq!(failed["addr"], d_gossip.to_string());
    drop(g);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_config_file_with_flag_overrides_and_the_http_endpoints() {
    let dir = temp_dir("config");
    let config = dir.join("agent.toml");
    std::fs::write(
        &config,
        "cluster = \"from-file\"\nmetadata = \"zone=a\"\nplacement = \"jump\"\nbind = \"127.0.0.1:1\"\n",
    )
    .unwrap();
    let mut g = Guard::default();
    // The flag's bind and cluster override the file's; metadata and placement come from
    // the file.
    let cluster = format!("flag-{}", std::process::id());
    let a = g.add(Agent::start(
        &dir,
        "a",
        &[
            "--config",
            config.to_str().unwrap(),
            "--bind",
            "127.0.0.1:0",
            "--cluster",
            &cluster,
        ],
    ));
    let agent = &g.0[a];
    assert_ne!(agent.gossip.port(), 1);
    let s = agent.scrape();
    assert_eq!(
        sample(&s, "hearsay_node_info", &[("cluster", &cluster)]),
        1.0
    );
    assert_eq!(
        sample(&s, "hearsay_placement_info", &[("scheme", "jump")]),
        1.0
    );
    let members = agent.json(&["members"]);
    assert_eq!(members["members"][0]["metadata"], "zone=a");
    // A table by default.
    let table = agent.ok(&["members"]);
    assert!(table.starts_with("   ID "), "{table}");
    assert!(
        table.contains("zone=a") && table.contains("alive"),
        "{table}"
    );

    // The other endpoints.
    for (path, status) in [
        ("/health", 200),
        ("/ready", 200),
        ("/version", 200),
        ("/debug/view", 200),
        ("/debug/crdt", 200),
        ("/nope", 404),
        ("/v1/lookup/k?replicas=zero", 400),
    ] {
        let (got, body) = http_get(agent.http, path);
        assert_eq!(got, status, "{path}: {body}");
        let j: Json = serde_json::from_str(&body).unwrap();
        if status >= 400 {
            assert!(j["error"].is_string(), "{path}: {body}");
        }
    }
    let (_, version) = http_get(agent.http, "/version");
    let version: Json = serde_json::from_str(&version).unwrap();
    assert_eq!(version["version"], env!("CARGO_PKG_VERSION"));
    let (_, view) = http_get(agent.http, "/debug/view");
    let view: Json = serde_json::from_str(&view).unwrap();
    assert_eq!(view["placement"]["scheme"], "jump");
    assert_eq!(view["members"].as_array().unwrap().len(), 1);
    let debug = agent.ok(&["debug"]);
    assert!(debug.contains("\"placement\""), "{debug}");
    agent.ok(&["set", "k", "v"]);
    let (_, crdt) = http_get(agent.http, "/debug/crdt");
    let crdt: Json = serde_json::from_str(&crdt).unwrap();
    assert_eq!(crdt["keys"][0]["key"], "k");
    assert_eq!(crdt["keys"][0]["value"], "v");
    // HEARSAY_AGENT names the agent when --agent is not given.
    let out = Command::new(BIN)
        .args(["get", "k"])
        .env("HEARSAY_AGENT", agent.http.to_string())
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "v\n");

    g.0[a].signal(libc::SIGTERM);
    assert_eq!(g.0[a].wait_exit(DEADLINE), 0);
    drop(g);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Run the binary, expect failure with exactly one line on stderr containing `needle`.
fn fails_in_one_line(args: &[&str], needle: &str) {
    let out = Command::new(BIN)
        .args(args)
        .env_remove("HEARSAY_AGENT")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success(), "{args:?} succeeded");
    let lines = stderr_lines(&out);
    assert_eq!(lines.len(), 1, "{args:?}: {lines:?}");
    assert!(lines[0].starts_with("error: "), "{args:?}: {lines:?}");
    assert!(
        lines[0].contains(needle),
        "{args:?}: {lines:?} lacks {needle:?}"
    );
}

#[test]
fn bad_flags_and_config_files_are_one_line_errors() {
    let dir = temp_dir("bad");
    fails_in_one_line(&["agent", "--shards", "zero"], "--shards");
    fails_in_one_line(&["agent", "--shards", "0"], "--shards");
    fails_in_one_line(&["agent", "--preset", "fast"], "--preset");
    fails_in_one_line(&["agent", "--bind", "nowhere"], "--bind");
    fails_in_one_line(&["agent", "--key", "abc"], "--key");
    fails_in_one_line(&["agent", "--http", "x"], "--http");
    fails_in_one_line(
        &["agent", "--event-log-max-bytes", "5"],
        "--event-log-max-bytes",
    );
    fails_in_one_line(&["agent", "--no-such-flag"], "--no-such-flag");
    fails_in_one_line(&["lookup"], "<KEY>");
    fails_in_one_line(&["frobnicate"], "frobnicate");
    fails_in_one_line(&[], "subcommand");
    // Values checked after merging, and the agent's own start-up failures.
    fails_in_one_line(&["agent"], "`advertise`");
    fails_in_one_line(
        &[
            "agent",
            "--bind",
            "127.0.0.1:0",
            "--cluster",
            &"x".repeat(65),
        ],
        "`cluster`",
    );
    let taken = UdpSocket::bind("127.0.0.1:0").unwrap();
    let taken_addr = taken.local_addr().unwrap().to_string();
    fails_in_one_line(
        &["agent", "--bind", &taken_addr, "--http", "off"],
        "cannot start the node",
    );
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_addr = busy.local_addr().unwrap().to_string();
    fails_in_one_line(
        &["agent", "--bind", "127.0.0.1:0", "--http", &busy_addr],
        "`http`",
    );

    for (name, text, needle) in [
        ("type.toml", "shards = \"x\"\n", "`shards`"),
        ("unknown.toml", "bindd = \"127.0.0.1:1\"\n", "`bindd`"),
        ("syntax.toml", "cluster = \"a\"\nbind = [\n", "line 2"),
        ("range.toml", "event_log_keep = -3\n", "`event_log_keep`"),
        ("key.toml", "keys = [\"00\"]\n", "`keys`"),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        fails_in_one_line(&["agent", "--config", path.to_str().unwrap()], needle);
    }
    fails_in_one_line(
        &[
            "agent",
            "--config",
            dir.join("missing.toml").to_str().unwrap(),
        ],
        "cannot read config file",
    );
    drop(taken);
    drop(busy);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_unreachable_agent_is_one_line_naming_it() {
    // A port nobody listens on: bound, then released.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    for args in [
        &["members"][..],
        &["get", "k"],
        &["set", "k", "v"],
        &["incr", "k", "2"],
        &["lookup", "k", "--replicas", "2"],
        &["drain"],
        &["leave"],
        &["debug"],
    ] {
        let mut all = args.to_vec();
        all.extend(["--agent", &addr]);
        fails_in_one_line(&all, &format!("cannot reach agent at {addr}: "));
    }
    // The environment variable names it too.
    let out = Command::new(BIN)
        .arg("members")
        .env("HEARSAY_AGENT", &addr)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert_eq!(stderr_lines(&out).len(), 1);
    assert!(String::from_utf8_lossy(&out.stderr).contains(&addr));
}

#[test]
fn version_information() {
    let out = Command::new(BIN).arg("--version").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.starts_with(&format!("hearsay {}\n", env!("CARGO_PKG_VERSION"))),
        "{text}"
    );
    for field in [
        "commit:",
        "built:",
        "target:",
        "profile:",
        "features:",
        "rustc:",
    ] {
        assert!(text.contains(field), "{text}");
    }
    assert!(text.contains("agent"), "features list the agent: {text}");
    let out = Command::new(BIN)
        .args(["version", "--json"])
        .output()
        .unwrap();
    let j: Json = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["version"], env!("CARGO_PKG_VERSION"));
    assert!(j["commit"].as_str().is_some_and(|c| !c.is_empty()));
    assert!(j["rustc"].as_str().unwrap().starts_with("rustc "));
    let out = Command::new(BIN).arg("version").output().unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap(), text);
}
