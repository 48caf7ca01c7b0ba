//! `edgegw events` (the monitor): what it prints for the paths it is given. No root needed.

mod common;

use std::fs;
use std::time::Duration;

use common::*;
use edgegw_kernel_events::monitor::{run_async, MonitorOptions};

#[test]
fn path_that_appears_as_a_directory_reports_the_files_created_inside_it() {
    // The reproduction from the bug report: `edgegw events --path /tmp/x` with x missing, then
    // `mkdir /tmp/x; echo hi > /tmp/x/a` printed only `CREATED /tmp/x`.
    let dir = TempDir::new("monitor-appears");
    let x = dir.path().join("x");
    let opts = MonitorOptions {
        paths: vec![x.clone()],
        count: Some(3),
        ..MonitorOptions::default()
    };
    let mut printed = Vec::new();
    block_on(async {
        let monitor = run_async(opts, &mut printed);
        let act = async {
            // The monitor builds its readers in its first poll, before this sleep ends.
            tokio::time::sleep(Duration::from_millis(100)).await;
            fs::create_dir(&x).unwrap();
            fs::write(x.join("a"), "hi\n").unwrap();
            // Well past the default 50 ms debounce: the appearance has been handled.
            tokio::time::sleep(Duration::from_secs(1)).await;
            fs::write(x.join("b"), "later\n").unwrap();
        };
        let (result, ()) = tokio::time::timeout(Duration::from_secs(20), async {
            tokio::join!(monitor, act)
        })
        .await
        .expect("the monitor printed three events within 20 s");
        result.expect("monitor");
    });
    let text = String::from_utf8(printed).unwrap();
    let created: Vec<&str> = text
        .lines()
        .map(|l| {
            let rest = l.split_once("CREATED ").expect(l).1;
            rest.split(' ').next().unwrap()
        })
        .collect();
    let expect = [x.clone(), x.join("a"), x.join("b")];
    let expect: Vec<String> = expect.iter().map(|p| p.display().to_string()).collect();
    assert_eq!(created, expect, "{text}");
}
