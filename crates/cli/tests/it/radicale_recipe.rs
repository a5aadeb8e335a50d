//! Issue 12, item 1: the README's Radicale storage-hook recipe, exactly as printed (only its two
//! directories replaced by temporary ones), with a real `davpush serve`, `davpush gateway` and
//! Radicale: a change written directly to Radicale reaches a subscriber of the gateway.

use std::process::Command;

use crate::procs::{self, Radicale};

const STORAGE: &str = "/var/lib/radicale/collections";
const DATA: &str = "/var/lib/davpush";

/// The recipe: the one ```ini block of the README with the hook, the same in protocol.md §7.6.
fn recipe() -> String {
    let needle = "hook = davpush notify";
    let readme = procs::fenced_block(&procs::repo_file("README.md"), "ini", needle);
    let protocol = procs::fenced_block(&procs::repo_file("docs/protocol.md"), "ini", needle);
    assert_eq!(readme, protocol, "README.md and docs/protocol.md §7.6 show the same recipe");
    assert!(readme.contains(STORAGE) && readme.contains(DATA), "{readme}");
    readme
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_12_the_readme_storage_hook_recipe_notifies_subscribers_of_the_gateway() {
    let recipe = recipe();
    let dir = tempfile::tempdir().unwrap();
    let storage = dir.path().join("radicale").join("collections");
    let data = dir.path().join("davpush");
    let config = recipe.replace(STORAGE, &storage.display().to_string()).replace(DATA, &data.display().to_string());

    std::fs::create_dir_all(&storage).unwrap();
    let director = procs::director(&data);
    // The Director is not on the default 127.0.0.1:8080 here: the hook finds it in the
    // gateway's configuration file (`DAVPUSH_GATEWAY_CONFIG`), which the recipe's text leaves
    // alone.
    let gateway_toml = dir.path().join("gateway.toml");
    std::fs::write(&gateway_toml, format!("director_url = {:?}\n", director.url())).unwrap();
    let path = procs::path_with_davpush();
    let env = [("PATH", path.as_str()), ("DAVPUSH_GATEWAY_CONFIG", gateway_toml.to_str().unwrap())];
    let Some(radicale) = Radicale::start(dir.path(), &config, &env) else { return };

    // Before the gateway ever ran there is no topic secret: the hook fails loudly (Radicale
    // logs its exit code) and creates none. The calendar is made directly at Radicale (its
    // hook notifies alice's home).
    let cal = "/alice/calendar/";
    let status = procs::dav("MKCALENDAR", &format!("{}{}", radicale.url, &cal[1..]), "").await;
    assert_eq!(status, 201, "{}", radicale.log());
    assert!(radicale.log().contains("returned non-zero exit status 66"), "{}", radicale.log());
    assert!(!data.join("topic-secret").exists());
    let logged = radicale.log().len();

    let gateway = procs::gateway(&data, &radicale.url, &director.url());
    assert!(data.join("topic-secret").exists(), "the gateway created the topic secret");
    let topic = procs::advertised_topic(&format!("{}{}", gateway.url(), &cal[1..])).await;
    let mut ws = procs::subscribe_through_gateway(&gateway, cal, &topic).await;

    // A new event written directly to Radicale, not through the gateway.
    let status = procs::dav("PUT", &format!("{}{}e1.ics", radicale.url, &cal[1..]), &procs::event("e1")).await;
    assert_eq!(status, 201);
    let frame = procs::next_frame(&mut ws).await;
    assert_eq!(frame["type"], "notify", "{frame}; Radicale's log: {}", radicale.log());
    assert_eq!(frame["topic"], topic.as_str());
    assert!(!radicale.log()[logged..].contains("storage hook"), "the hook failed: {}", radicale.log());
    // Nothing of davpush's was created in Radicale's storage folder (where the hook runs).
    let stray: Vec<_> = std::fs::read_dir(&storage).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(stray.iter().all(|n| n == "collection-root" || n.to_string_lossy().starts_with(".Radicale")), "{stray:?}");

    // A MOVE made directly at Radicale to another calendar notifies both collections: the hook
    // gets the source as `%(path)s` and the destination as `%(to_path)s`.
    let other = "/alice/other/";
    let status = procs::dav("MKCALENDAR", &format!("{}{}", radicale.url, &other[1..]), "").await;
    assert_eq!(status, 201, "{}", radicale.log());
    let other_topic = procs::advertised_topic(&format!("{}{}", gateway.url(), &other[1..])).await;
    let mut other_ws = procs::subscribe_through_gateway(&gateway, other, &other_topic).await;
    let logged = radicale.log().len();
    let status = reqwest::Client::new()
        .request(reqwest::Method::from_bytes(b"MOVE").unwrap(), format!("{}{}e1.ics", radicale.url, &cal[1..]))
        .header("Authorization", procs::basic(procs::ALICE.0, procs::ALICE.1))
        .header("Destination", format!("{}{}e1.ics", radicale.url, &other[1..]))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status.as_u16(), 201, "{}", radicale.log());
    let frame = procs::next_frame(&mut ws).await;
    assert_eq!((frame["type"].as_str(), frame["topic"].as_str()), (Some("notify"), Some(topic.as_str())), "{frame}");
    let frame = procs::next_frame(&mut other_ws).await;
    assert_eq!(
        (frame["type"].as_str(), frame["topic"].as_str()),
        (Some("notify"), Some(other_topic.as_str())),
        "{frame}"
    );
    assert!(!radicale.log()[logged..].contains("storage hook"), "the hook failed: {}", radicale.log());

    // The hook's command also works from any other directory, e.g. `/`, …
    let hook = config.lines().find_map(|l| l.strip_prefix("hook = ")).unwrap();
    let item = storage.join("collection-root/alice/calendar/e2.ics");
    let run = |item: &str| {
        let mut cmd = Command::new("sh");
        procs::clean_env(&mut cmd);
        cmd.current_dir("/").env("PATH", &path).env("DAVPUSH_GATEWAY_CONFIG", &gateway_toml);
        // Radicale leaves `%(to_path)s` empty for every write but a MOVE.
        cmd.arg("-c").arg(hook.replace("%(path)s", item).replace("%(to_path)s", "")).output().unwrap()
    };
    let out = run(&item.display().to_string());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["addressed"], 1, "{answer}");
    let frame = procs::next_frame(&mut ws).await;
    assert_eq!((frame["type"].as_str(), frame["topic"].as_str()), (Some("notify"), Some(topic.as_str())));

    // … and a path outside the storage folder is an error, not a silent notify of nothing.
    let out = run("/srv/elsewhere/alice/calendar/e3.ics");
    assert_eq!(out.status.code(), Some(65), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not under --strip-prefix"));
}
