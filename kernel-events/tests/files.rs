//! The file reader: atomic saves, sed -i, editor swap files, the Kubernetes symlink swap,
//! trees with new subdirectories, missing paths, lost roots. No root needed.

mod common;

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::time::Duration;

use common::*;
use edgegw_kernel_events::files::{FileEvent, FileOptions, MissingPath};
use edgegw_kernel_events::{Change, Event, EventKind, KernelEvents, ResyncReason};

/// Longer than the debounce: after this much quiet no more events are coming.
const QUIET: Duration = Duration::from_millis(700);

/// A debounce long enough that a loaded 2-core CI machine never splits one save in two.
fn patient() -> FileOptions {
    FileOptions {
        debounce: Duration::from_millis(250),
        max_delay: Duration::from_secs(2),
        ..FileOptions::default()
    }
}

fn entries_for<'a>(events: &'a [Event], path: &Path) -> Vec<&'a Event> {
    events
        .iter()
        .filter(
            |e| matches!(&e.kind, EventKind::File(FileEvent::Entry { path: p, .. }) if p == path),
        )
        .collect()
}

fn change_of(e: &Event) -> Change {
    match &e.kind {
        EventKind::File(FileEvent::Entry { change, .. }) => *change,
        other => panic!("not a file entry: {other:?}"),
    }
}

/// Runs `act` against a reader watching `file`; returns every event until quiet.
fn events_for_single_file(
    dir: &Path,
    file: &Path,
    act: impl FnOnce(),
) -> (Vec<Event>, KernelEvents) {
    block_on(async {
        let mut events = KernelEvents::builder()
            .watch_file(file)
            .file_options(patient())
            .build()
            .await
            .expect("build");
        assert!(events.files().unwrap().contains_key(file) || !file.exists());
        act();
        let got = collect_until_quiet(&mut events, QUIET).await;
        let _ = dir;
        (got, events)
    })
}

#[test]
fn atomic_save_gives_exactly_one_change_with_the_new_identity() {
    let dir = TempDir::new("atomic");
    let file = dir.path().join("cert.pem");
    fs::write(&file, "old").unwrap();
    let (got, events) = events_for_single_file(dir.path(), &file, || {
        let tmp = dir.path().join(".cert.pem.tmp");
        fs::write(&tmp, "new contents").unwrap();
        fs::rename(&tmp, &file).unwrap();
    });
    let mine = entries_for(&got, &file);
    assert_eq!(mine.len(), 1, "exactly one change: {got:#?}");
    assert_eq!(change_of(mine[0]), Change::Changed);
    let EventKind::File(FileEvent::Entry {
        identity: Some(id), ..
    }) = &mine[0].kind
    else {
        panic!()
    };
    let meta = fs::metadata(&file).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!((id.ino, id.size), (meta.ino(), 12));
    assert_eq!(events.files().unwrap()[&file], *id);
    assert_well_formed(&got);
}

#[test]
fn sed_in_place_gives_exactly_one_change() {
    let dir = TempDir::new("sed");
    let file = dir.path().join("edgegw.toml");
    fs::write(&file, "port = 1\n").unwrap();
    let (got, _) = events_for_single_file(dir.path(), &file, || {
        let status = std::process::Command::new("sed")
            .args(["-i", "s/1/2/"])
            .arg(&file)
            .status()
            .expect("run sed");
        assert!(status.success());
    });
    let mine = entries_for(&got, &file);
    assert_eq!(mine.len(), 1, "{got:#?}");
    assert_eq!(change_of(mine[0]), Change::Changed);
}

#[test]
fn editor_swap_file_and_backup_dance_gives_exactly_one_change() {
    let dir = TempDir::new("vim");
    let file = dir.path().join("edgegw.toml");
    fs::write(&file, "a = 1\n").unwrap();
    let (got, _) = events_for_single_file(dir.path(), &file, || {
        // What vim does with backupcopy=no: swap file, rename original to a backup, write the
        // new file, remove the backup and the swap file.
        let swap = dir.path().join(".edgegw.toml.swp");
        fs::write(&swap, "swap").unwrap();
        let backup = dir.path().join("edgegw.toml~");
        fs::rename(&file, &backup).unwrap();
        fs::write(&file, "a = 2\n").unwrap();
        fs::remove_file(&backup).unwrap();
        fs::remove_file(&swap).unwrap();
    });
    let mine = entries_for(&got, &file);
    assert_eq!(mine.len(), 1, "{got:#?}");
    assert_eq!(change_of(mine[0]), Change::Changed);
    // Files the editor used on the side are not watched paths.
    assert_eq!(got.len(), 1, "only the watched path is reported: {got:#?}");
}

#[test]
fn kubernetes_configmap_symlink_swap_gives_exactly_one_change() {
    let dir = TempDir::new("k8s");
    let d = dir.path();
    // The layout the kubelet writes: key -> ..data/key, ..data -> ..<timestamp> directory.
    fs::create_dir(d.join("..2024_01_01")).unwrap();
    fs::write(d.join("..2024_01_01/tls.crt"), "v1").unwrap();
    symlink("..2024_01_01", d.join("..data")).unwrap();
    symlink("..data/tls.crt", d.join("tls.crt")).unwrap();
    let file = d.join("tls.crt");
    let (got, events) = events_for_single_file(d, &file, || {
        fs::create_dir(d.join("..2024_01_02")).unwrap();
        fs::write(d.join("..2024_01_02/tls.crt"), "v2 longer").unwrap();
        symlink("..2024_01_02", d.join("..data_tmp")).unwrap();
        fs::rename(d.join("..data_tmp"), d.join("..data")).unwrap();
        fs::remove_dir_all(d.join("..2024_01_01")).unwrap();
    });
    let mine = entries_for(&got, &file);
    assert_eq!(mine.len(), 1, "{got:#?}");
    assert_eq!(change_of(mine[0]), Change::Changed);
    assert_eq!(events.files().unwrap()[&file].size, 9);
}

#[test]
fn symlink_into_another_directory_is_followed_when_that_link_changes() {
    // certbot: /etc/edgegw/cert.pem -> live/cert.pem -> ../archive/certN.pem
    let dir = TempDir::new("certbot");
    let d = dir.path();
    fs::create_dir_all(d.join("archive")).unwrap();
    fs::create_dir_all(d.join("live")).unwrap();
    fs::create_dir_all(d.join("etc")).unwrap();
    fs::write(d.join("archive/cert1.pem"), "one").unwrap();
    symlink("../archive/cert1.pem", d.join("live/cert.pem")).unwrap();
    symlink(d.join("live/cert.pem"), d.join("etc/cert.pem")).unwrap();
    let file = d.join("etc/cert.pem");
    let (got, _) = events_for_single_file(d, &file, || {
        fs::write(d.join("archive/cert2.pem"), "two!").unwrap();
        symlink("../archive/cert2.pem", d.join("live/cert.pem.new")).unwrap();
        fs::rename(d.join("live/cert.pem.new"), d.join("live/cert.pem")).unwrap();
    });
    let mine = entries_for(&got, &file);
    assert_eq!(mine.len(), 1, "{got:#?}");
    assert_eq!(change_of(mine[0]), Change::Changed);
}

#[test]
fn tree_picks_up_new_subdirectories_and_their_files() {
    let dir = TempDir::new("tree");
    let root = dir.path().join("root");
    fs::create_dir(&root).unwrap();
    block_on(async {
        let mut events = KernelEvents::builder()
            .watch_tree(&root)
            .file_options(patient())
            .build()
            .await
            .unwrap();
        let mut model = FileModel {
            entries: events.files().unwrap().clone(),
        };
        fs::create_dir_all(root.join("a/b/c")).unwrap();
        fs::write(root.join("a/b/c/deep.txt"), "x").unwrap();
        let got = collect_until_quiet(&mut events, QUIET).await;
        got.iter().for_each(|e| model.apply(e));
        // Created after the first wait: the new directories must be watched by now.
        fs::write(root.join("a/b/c/later.txt"), "y").unwrap();
        fs::remove_file(root.join("a/b/c/deep.txt")).unwrap();
        let got2 = collect_until_quiet(&mut events, QUIET).await;
        got2.iter().for_each(|e| model.apply(e));
        let truth = walk(&root);
        assert_eq!(model.entries.keys().cloned().collect::<Vec<_>>(), truth);
        assert_eq!(&model.entries, events.files().unwrap());
        assert_eq!(events.file_watch_count(), 4, "root, a, a/b, a/b/c");
        assert_all_nonblocking(&events);
    });
}

/// Every path in a tree, root included, sorted (what a fresh walk sees).
pub fn walk(root: &Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![root.to_path_buf()];
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                stack.push(p.clone());
            }
            out.push(p);
        }
    }
    out.sort();
    out
}

#[test]
fn missing_file_is_reported_when_it_appears_deep_below_an_existing_ancestor() {
    let dir = TempDir::new("missing");
    let file = dir.path().join("not/yet/there.pem");
    block_on(async {
        let mut events = KernelEvents::builder()
            .watch_file(&file)
            .file_options(patient())
            .build()
            .await
            .unwrap();
        assert!(events.files().unwrap().is_empty());
        fs::create_dir_all(file.parent().unwrap()).unwrap();
        fs::write(&file, "hello").unwrap();
        let got = collect_until_quiet(&mut events, QUIET).await;
        let mine = entries_for(&got, &file);
        assert_eq!(mine.len(), 1, "{got:#?}");
        assert_eq!(change_of(mine[0]), Change::Added);
        fs::remove_file(&file).unwrap();
        let got = collect_until_quiet(&mut events, QUIET).await;
        assert_eq!(change_of(entries_for(&got, &file)[0]), Change::Removed);
    });
}

#[test]
fn missing_path_is_a_clear_error_when_asked() {
    let dir = TempDir::new("missing-err");
    let file = dir.path().join("absent.toml");
    let err = block_on(
        KernelEvents::builder()
            .watch_file(&file)
            .file_options(FileOptions {
                missing: MissingPath::Error,
                ..FileOptions::default()
            })
            .build(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("absent.toml"), "{err}");
}

#[test]
fn removed_tree_root_resyncs_and_reports_everything_removed_then_recreated() {
    let dir = TempDir::new("rootlost");
    let root = dir.path().join("conf.d");
    fs::create_dir(&root).unwrap();
    fs::write(root.join("a.toml"), "a").unwrap();
    block_on(async {
        let mut events = KernelEvents::builder()
            .watch_tree(&root)
            .file_options(patient())
            .build()
            .await
            .unwrap();
        let mut model = FileModel {
            entries: events.files().unwrap().clone(),
        };
        fs::remove_dir_all(&root).unwrap();
        let got = collect_until_quiet(&mut events, QUIET).await;
        got.iter().for_each(|e| model.apply(e));
        assert!(
            got.iter().any(|e| matches!(
                e.kind,
                EventKind::Resync {
                    reason: ResyncReason::RootLost,
                    ..
                }
            )),
            "{got:#?}"
        );
        assert_well_formed(&got);
        assert!(model.entries.is_empty(), "{:#?}", model.entries);
        // The root comes back: the ancestor watch sees it.
        fs::create_dir(&root).unwrap();
        fs::write(root.join("b.toml"), "b").unwrap();
        let got = collect_until_quiet(&mut events, QUIET).await;
        got.iter().for_each(|e| model.apply(e));
        assert_eq!(
            model.entries.keys().cloned().collect::<Vec<_>>(),
            walk(&root)
        );
    });
}

#[test]
fn changes_keep_coming_but_are_reported_within_the_maximum_delay() {
    let dir = TempDir::new("maxdelay");
    let file = dir.path().join("busy.log");
    fs::write(&file, "").unwrap();
    block_on(async {
        let mut events = KernelEvents::builder()
            .watch_file(&file)
            .file_options(FileOptions {
                debounce: Duration::from_millis(100),
                max_delay: Duration::from_millis(300),
                ..FileOptions::default()
            })
            .build()
            .await
            .unwrap();
        // Write every 20 ms until the change is reported: the debounce window never closes
        // while the writer runs, so only max_delay can end the wait. (No bound on wall-clock
        // time is asserted: a stalled machine may let the debounce close instead, which is no
        // failure; the 30 s limit only stops a broken reader from hanging the test.)
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = std::thread::spawn({
            let (file, stop) = (file.clone(), stop.clone());
            move || {
                let mut i = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    fs::write(&file, format!("{i}")).unwrap();
                    i += 1;
                    std::thread::sleep(Duration::from_millis(20));
                }
                i
            }
        });
        let first = tokio::time::timeout(Duration::from_secs(30), events.next()).await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let writes = writer.join().unwrap();
        let first = first
            .expect("a change while writes keep coming (max_delay)")
            .expect("reader");
        assert_eq!(change_of(&first), Change::Changed);
        assert!(writes > 0);
    });
}

#[test]
fn hashing_reports_content_changes_with_the_same_size() {
    let dir = TempDir::new("hash");
    let file = dir.path().join("key");
    fs::write(&file, "aaaa").unwrap();
    block_on(async {
        let mut events = KernelEvents::builder()
            .watch_file(&file)
            .file_options(FileOptions {
                hash_contents: true,
                ..FileOptions::default()
            })
            .build()
            .await
            .unwrap();
        let before = events.files().unwrap()[&file].hash.expect("hash");
        fs::write(&file, "bbbb").unwrap();
        let got = collect_until_quiet(&mut events, QUIET).await;
        let after = events.files().unwrap()[&file].hash.expect("hash");
        assert_ne!(before, after);
        assert_eq!(entries_for(&got, &file).len(), 1);
    });
}

/// The paths of a model, sorted (to compare with [`walk`]).
fn keys(model: &FileModel) -> Vec<std::path::PathBuf> {
    model.entries.keys().cloned().collect()
}

#[test]
fn missing_path_that_appears_as_a_directory_is_watched_as_a_tree() {
    // `edgegw events --path /tmp/x` with x missing, then `mkdir x; echo hi > x/a`.
    let dir = TempDir::new("appears-dir");
    let x = dir.path().join("x");
    block_on(async {
        let mut events = KernelEvents::builder()
            .watch_path(&x)
            .file_options(patient())
            .build()
            .await
            .unwrap();
        let mut model = FileModel::default();
        // Created right after the directory, before the reader could watch it: the scan that
        // follows the new watch must find it.
        fs::create_dir(&x).unwrap();
        fs::write(x.join("a"), "hi").unwrap();
        let got = collect_until_quiet(&mut events, QUIET).await;
        got.iter().for_each(|e| model.apply(e));
        assert_eq!(keys(&model), walk(&x), "{got:#?}");
        // Created after the appearance was handled: the tree's own watches see it.
        fs::write(x.join("b"), "later").unwrap();
        fs::create_dir(x.join("sub")).unwrap();
        fs::write(x.join("sub/c"), "deeper").unwrap();
        let got = collect_until_quiet(&mut events, QUIET).await;
        got.iter().for_each(|e| model.apply(e));
        assert_eq!(keys(&model), walk(&x), "{got:#?}");
        assert_eq!(&model.entries, events.files().unwrap());
        assert_eq!(
            events.file_watch_count(),
            2,
            "x and x/sub; the parent is released"
        );
        assert_well_formed(&got);
    });
}

#[test]
fn missing_path_that_appears_as_a_directory_several_levels_down_is_watched_as_a_tree() {
    let dir = TempDir::new("appears-deep");
    let x = dir.path().join("p/q/x");
    block_on(async {
        let mut events = KernelEvents::builder()
            .watch_path(&x)
            .file_options(patient())
            .build()
            .await
            .unwrap();
        let mut model = FileModel::default();
        fs::create_dir_all(&x).unwrap();
        fs::write(x.join("a"), "hi").unwrap();
        let got = collect_until_quiet(&mut events, QUIET).await;
        got.iter().for_each(|e| model.apply(e));
        fs::write(x.join("b"), "later").unwrap();
        let got = collect_until_quiet(&mut events, QUIET).await;
        got.iter().for_each(|e| model.apply(e));
        assert_eq!(keys(&model), walk(&x), "{got:#?}");
        assert_eq!(&model.entries, events.files().unwrap());
    });
}

#[test]
fn watched_directory_removed_and_recreated_is_watched_as_a_tree_again() {
    let dir = TempDir::new("recreated-dir");
    let x = dir.path().join("x");
    fs::create_dir(&x).unwrap();
    fs::write(x.join("old"), "o").unwrap();
    block_on(async {
        let mut events = KernelEvents::builder()
            .watch_path(&x)
            .file_options(patient())
            .build()
            .await
            .unwrap();
        let mut model = FileModel {
            entries: events.files().unwrap().clone(),
        };
        fs::remove_dir_all(&x).unwrap();
        let got = collect_until_quiet(&mut events, QUIET).await;
        got.iter().for_each(|e| model.apply(e));
        assert!(model.entries.is_empty(), "{got:#?}");
        fs::create_dir(&x).unwrap();
        fs::write(x.join("a"), "hi").unwrap();
        let got = collect_until_quiet(&mut events, QUIET).await;
        got.iter().for_each(|e| model.apply(e));
        assert_eq!(keys(&model), walk(&x), "{got:#?}");
        fs::write(x.join("b"), "after the re-creation was handled").unwrap();
        fs::create_dir(x.join("sub")).unwrap();
        fs::write(x.join("sub/c"), "c").unwrap();
        let got = collect_until_quiet(&mut events, QUIET).await;
        got.iter().for_each(|e| model.apply(e));
        assert_eq!(keys(&model), walk(&x), "{got:#?}");
        assert_eq!(&model.entries, events.files().unwrap());
        assert_eq!(events.file_watch_count(), 2, "x and x/sub");
        // Removed and re-created faster than the reader runs: the resync finds the new tree.
        fs::remove_dir_all(&x).unwrap();
        fs::create_dir(&x).unwrap();
        fs::write(x.join("quick"), "q").unwrap();
        let got = collect_until_quiet(&mut events, QUIET).await;
        got.iter().for_each(|e| model.apply(e));
        fs::write(x.join("after-quick"), "q").unwrap();
        let got = collect_until_quiet(&mut events, QUIET).await;
        got.iter().for_each(|e| model.apply(e));
        assert_eq!(keys(&model), walk(&x), "{got:#?}");
        assert_eq!(&model.entries, events.files().unwrap());
    });
}

#[test]
fn watched_path_follows_what_it_is_when_a_file_becomes_a_directory_and_back() {
    let dir = TempDir::new("file-dir-file");
    let x = dir.path().join("x");
    fs::write(&x, "a file first").unwrap();
    block_on(async {
        let mut events = KernelEvents::builder()
            .watch_path(&x)
            .file_options(patient())
            .build()
            .await
            .unwrap();
        let mut model = FileModel {
            entries: events.files().unwrap().clone(),
        };
        // File -> directory: watched as a tree from then on.
        fs::remove_file(&x).unwrap();
        fs::create_dir(&x).unwrap();
        fs::write(x.join("a"), "inside").unwrap();
        let got = collect_until_quiet(&mut events, QUIET).await;
        got.iter().for_each(|e| model.apply(e));
        fs::write(x.join("b"), "later").unwrap();
        let got = collect_until_quiet(&mut events, QUIET).await;
        got.iter().for_each(|e| model.apply(e));
        assert_eq!(keys(&model), walk(&x), "{got:#?}");
        // Directory -> file: the tree's entries go, the file is watched as a single file.
        fs::remove_dir_all(&x).unwrap();
        fs::write(&x, "a file again").unwrap();
        let got = collect_until_quiet(&mut events, QUIET).await;
        got.iter().for_each(|e| model.apply(e));
        assert_eq!(keys(&model), vec![x.clone()], "{got:#?}");
        fs::write(&x, "changed in place").unwrap();
        let got = collect_until_quiet(&mut events, QUIET).await;
        got.iter().for_each(|e| model.apply(e));
        let mine = entries_for(&got, &x);
        assert_eq!(mine.len(), 1, "{got:#?}");
        assert_eq!(change_of(mine[0]), Change::Changed);
        assert_eq!(&model.entries, events.files().unwrap());
        assert_eq!(model.entries[&x].size, "changed in place".len() as u64);
    });
}

#[test]
fn a_degraded_poll_of_zero_is_an_invalid_option() {
    // It would rescan in a loop while a watch cannot be added.
    let dir = TempDir::new("zero-poll");
    let err = block_on(
        KernelEvents::builder()
            .watch_tree(dir.path())
            .file_options(FileOptions {
                degraded_poll: Duration::ZERO,
                ..FileOptions::default()
            })
            .build(),
    )
    .unwrap_err();
    assert!(
        matches!(&err, edgegw_kernel_events::Error::InvalidOption(m) if m.contains("degraded_poll")),
        "{err:?}"
    );
}

#[test]
fn a_watched_path_that_cannot_be_resolved_is_a_clear_error() {
    let err = block_on(KernelEvents::builder().watch_file("").build()).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("resolve watched path \"\""), "{text}");
}

#[test]
fn tree_whose_root_is_a_symlink_is_the_tree_it_points_to_and_follows_a_retarget() {
    // A versioned deploy: /etc/app -> releases/v1, switched atomically to releases/v2.
    let dir = TempDir::new("rootlink");
    let d = dir.path();
    for v in ["v1", "v2"] {
        fs::create_dir_all(d.join(format!("releases/{v}/conf.d"))).unwrap();
        fs::write(d.join(format!("releases/{v}/conf.d/{v}.toml")), v).unwrap();
    }
    symlink("releases/v1", d.join("app")).unwrap();
    let app = d.join("app");
    block_on(async {
        let mut events = KernelEvents::builder()
            .watch_path(&app)
            .file_options(patient())
            .build()
            .await
            .unwrap();
        let mut model = FileModel {
            entries: events.files().unwrap().clone(),
        };
        assert_eq!(
            keys(&model),
            walk(&app),
            "the initial state is the target's tree"
        );
        fs::write(d.join("releases/v1/conf.d/new.toml"), "n").unwrap();
        let got = collect_until_quiet(&mut events, QUIET).await;
        got.iter().for_each(|e| model.apply(e));
        assert_eq!(keys(&model), walk(&app), "{got:#?}");
        // The switch: a new link renamed over the old one.
        symlink("releases/v2", d.join("app.new")).unwrap();
        fs::rename(d.join("app.new"), &app).unwrap();
        let got = collect_until_quiet(&mut events, QUIET).await;
        got.iter().for_each(|e| model.apply(e));
        assert_eq!(keys(&model), walk(&app), "{got:#?}");
        assert!(model.entries.contains_key(&app.join("conf.d/v2.toml")));
        // The old release is not watched any more; the new one is.
        fs::write(d.join("releases/v1/conf.d/stale.toml"), "s").unwrap();
        fs::write(d.join("releases/v2/conf.d/fresh.toml"), "f").unwrap();
        let got = collect_until_quiet(&mut events, QUIET).await;
        got.iter().for_each(|e| model.apply(e));
        assert_eq!(keys(&model), walk(&app), "{got:#?}");
        assert_eq!(&model.entries, events.files().unwrap());
        assert!(
            !got.iter()
                .any(|e| matches!(e.kind, EventKind::Resync { .. })),
            "no stale watch left to report unknown events: {got:#?}"
        );
    });
}

#[test]
fn symlink_to_a_directory_inside_a_tree_is_an_entry_not_followed() {
    let dir = TempDir::new("innerlink");
    let root = dir.path().join("tree");
    let outside = dir.path().join("outside");
    fs::create_dir(&root).unwrap();
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("before"), "b").unwrap();
    block_on(async {
        let mut events = KernelEvents::builder()
            .watch_tree(&root)
            .file_options(patient())
            .build()
            .await
            .unwrap();
        let mut model = FileModel {
            entries: events.files().unwrap().clone(),
        };
        symlink(&outside, root.join("link")).unwrap();
        let got = collect_until_quiet(&mut events, QUIET).await;
        got.iter().for_each(|e| model.apply(e));
        assert_eq!(keys(&model), walk(&root), "{got:#?}");
        assert_eq!(
            model.entries[&root.join("link")].kind,
            edgegw_kernel_events::files::FileKind::Symlink
        );
        // What happens outside the tree is not the tree's.
        fs::write(outside.join("after"), "a").unwrap();
        let got = collect_until_quiet(&mut events, QUIET).await;
        assert!(got.is_empty(), "{got:#?}");
        assert_eq!(
            events.file_watch_count(),
            1,
            "only the tree's own directory"
        );
    });
}
