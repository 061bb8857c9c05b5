//! The default run end to end, small: real nodes on the runtime, every step measured.

use std::process::Command;

fn run(args: &[&str]) -> serde_json::Value {
    let dir = std::env::temp_dir().join(format!("loadgen-run-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join(format!("{}.json", args.join("_").replace(['-', ','], "")));
    let out = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(args)
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "loadgen failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap()
}

fn check_converged(record: &serde_json::Value, steps: &[&str]) {
    let got: Vec<&str> = record["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step"].as_str().unwrap())
        .collect();
    assert_eq!(got, steps);
    for s in record["steps"].as_array().unwrap() {
        if let Some(c) = s["convergence"].as_object() {
            assert_eq!(
                c["converged"], c["nodes"],
                "step {} did not converge: {s}",
                s["step"]
            );
            assert!(c["last_ms"].as_f64().unwrap() >= c["first_ms"].as_f64().unwrap());
        }
        assert_eq!(s["false_declarations"], 0, "{s}");
        if s["step"] != "kill" && s["step"] != "placement" {
            assert_eq!(s["distinct_views"], 1, "views differ after {}", s["step"]);
        }
    }
    assert_eq!(record["placement_identical"], true);
}

#[test]
fn cold_start_rumour_crdt_and_kill_on_the_memory_transport() {
    let r = run(&[
        "run",
        "--nodes",
        "60",
        "--preset",
        "local",
        "--transport",
        "mem",
        "--scenario",
        "cold-start,rumor,crdt,kill,partition,steady",
        "--kill",
        "5",
        "--partition-periods",
        "3",
    ]);
    check_converged(
        &r,
        &["cold-start", "rumor", "crdt", "kill", "partition", "steady"],
    );
    // Every node learned the 59 others in the cold start, and the rumour's change in the
    // rumour step, each from at least one of the copies it read.
    let usage = |i: usize, f: &str| r["steps"][i]["usage"][f].as_u64().unwrap();
    assert!(usage(0, "updates_merged") >= 60 * 59, "{}", r["steps"][0]);
    assert!(usage(1, "updates_merged") >= 59, "{}", r["steps"][1]);
    for i in 0..2 {
        assert!(usage(i, "updates_read") >= usage(i, "updates_merged"));
    }
    // The memory transport loses nothing, so the updates written in the cold start are the
    // ones read in it, but for the few in flight when each node's counters were read (5%
    // is about 15 full datagrams here). The joiners' first answers came as catch-up state,
    // and the seed gossiped the joins.
    let sent = &r["steps"][0]["usage"]["updates_sent"];
    let carried = |f: &str| sent[f].as_u64().unwrap();
    let written: u64 = ["gossip", "piggyback", "pull", "catch_up"]
        .map(carried)
        .iter()
        .sum();
    let read = usage(0, "updates_read");
    assert!(
        written.abs_diff(read) * 20 <= read,
        "{read} read, {written} written: {sent}"
    );
    assert!(carried("catch_up") > 0 && carried("gossip") > 0, "{sent}");
    // The cold start is also told by quarter of the join window: every node in one group,
    // the seed in the first, and the groups' last node is the step's.
    let groups = r["steps"][0]["by_join"].as_array().unwrap();
    assert_eq!(groups.len(), 4, "{}", r["steps"][0]);
    let sum = |f: &str| groups.iter().map(|g| g[f].as_u64().unwrap()).sum::<u64>();
    assert_eq!(sum("nodes"), 60);
    assert_eq!(sum("converged"), 60);
    assert_eq!(groups[0]["joined_from_ms"], 0.0);
    let last = groups
        .iter()
        .map(|g| g["last_ms"].as_f64().unwrap())
        .fold(0.0, f64::max);
    assert_eq!(
        last,
        r["steps"][0]["convergence"]["last_ms"].as_f64().unwrap()
    );
    assert!(r["steps"][1].get("by_join").is_none());
    // The last three nodes to converge are reported one by one, last first, then the median
    // one; each learned the 59 others in the step, was told to join, and its sampled view
    // never held more than the 60 nodes.
    let stragglers = r["steps"][0]["stragglers"].as_array().unwrap();
    let ranks: Vec<u64> = stragglers
        .iter()
        .map(|s| s["rank"].as_u64().unwrap())
        .collect();
    assert_eq!(ranks, [60, 59, 58, 30], "{}", r["steps"][0]);
    assert_eq!(
        stragglers[0]["converged_ms"],
        r["steps"][0]["convergence"]["last_ms"]
    );
    for s in stragglers {
        assert!(s["updates_merged"].as_u64().unwrap() >= 59, "{s}");
        assert!(s["updates_read"].as_u64().unwrap() >= s["updates_merged"].as_u64().unwrap());
        assert!(s["joined_ms"].as_f64().is_some(), "{s}");
        let live = s["live_by_period"].as_array().unwrap();
        assert!(
            !live.is_empty() && live.iter().all(|v| v.as_u64().unwrap() <= 60),
            "{s}"
        );
    }
    // A step that waits for no full view has none, also right after one that did; the
    // partition's heal has them, without joins.
    for i in [1, 2, 5] {
        assert!(
            r["steps"][i].get("stragglers").is_none(),
            "{}",
            r["steps"][i]
        );
    }
    let heal = r["steps"][4]["stragglers"].as_array().unwrap();
    assert_eq!(heal.len(), 4);
    assert!(heal.iter().all(|s| s.get("joined_ms").is_none()));
    let kill = &r["steps"][3];
    // 5% of 60: three nodes crash; the other 57 see them dead, within the bound.
    assert_eq!(kill["convergence"]["nodes"], 57);
    assert!(kill["convergence"]["last_ms"].as_f64().unwrap() <= kill["bound_ms"].as_f64().unwrap());
    assert!(kill["lookups"]["count"].as_u64().unwrap() > 0);
    // The crashed members were found by probes that failed, which raised suspicions.
    let detector = &kill["usage"]["detector"];
    assert!(
        detector["probe_failures"].as_u64().unwrap() > 0,
        "{detector}"
    );
    assert!(detector["suspicions"].as_u64().unwrap() > 0, "{detector}");
    assert!(detector["probes"].as_u64() > detector["probe_failures"].as_u64());
    assert_eq!(r["backend"], "memory (in-process network)");
}

#[test]
fn real_udp_sockets_with_loss_and_churn() {
    let r = run(&[
        "--nodes",
        "40",
        "--preset",
        "local",
        "--scenario",
        "cold-start,churn,rumor",
        "--churn-periods",
        "5",
        "--loss",
        "0.05",
        "--delay",
        "uniform:0:2",
    ]);
    check_converged(&r, &["cold-start", "churn", "rumor"]);
    assert_eq!(r["transport"], "Udp");
}

#[test]
fn bad_arguments_are_one_line_errors() {
    for args in [
        &["--nodes", "1"][..],
        &["--delay", "uniform:5:1"],
        &["--scenario", "rumor"],
        &["--loss", "1.5"],
        &["--gossip-interval", "0"],
        &["--stragglers", "101"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_loadgen"))
            .args(args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} was accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
    }
}
