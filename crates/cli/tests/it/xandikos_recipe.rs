//! Issue 14: docs/servers.md's Git hook recipe for Xandikos, exactly as printed (only its two
//! directories replaced by temporary ones), with a real Xandikos, `davpush serve` and
//! `davpush gateway`: a `git commit` in a collection, and a change written directly to Xandikos,
//! reach a subscriber of the gateway with the collection's new sync-token.

use std::process::Command;

use crate::documented::{Sandbox, block};
use crate::procs;

const STORAGE: &str = "/var/lib/xandikos";
const DATA: &str = "/var/lib/davpush";
const FIRST: &str = "cat > /var/lib/xandikos/post-commit <<'EOF'";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_14_the_xandikos_git_hook_recipe_notifies_subscribers_of_the_gateway() {
    let Some(py) = davpush_testkit::python::python_with(&["xandikos"]) else { return };
    let Some(mut sb) = Sandbox::new() else { return };
    let dir = sb.dir.path().to_owned();
    let (storage, data) = (dir.join("xandikos"), dir.join("davpush"));
    std::fs::create_dir_all(&storage).unwrap();
    let director = procs::director(&data);
    let gateway_toml = dir.join("gateway.toml");
    std::fs::write(&gateway_toml, format!("director_url = {:?}\n", director.url())).unwrap();
    let path = procs::path_with_davpush();

    // Xandikos at `/`, serving <storage>/data, with davpush on its PATH (it runs the hook).
    let port = davpush_testkit::free_port();
    let args: Vec<String> = ["-m", "xandikos", "serve", "--defaults", "-l", "127.0.0.1", "--no-detect-systemd", "-d"]
        .iter()
        .map(|s| s.to_string())
        .chain([storage.join("data").display().to_string(), "-p".into(), port.to_string()])
        .collect();
    let env = [("PATH", path.as_str()), ("DAVPUSH_GATEWAY_CONFIG", gateway_toml.to_str().unwrap())];
    let log = dir.join("xandikos.log");
    let mut xandikos = davpush_testkit::dav_servers::Tied::spawn(&py, &args, &env, &log, None);
    davpush_testkit::dav_servers::wait_port(port, &mut xandikos, &log);
    let upstream = format!("http://127.0.0.1:{port}/");
    let cal = "/user/calendars/calendar/";
    let cal_dir = storage.join("data/user/calendars/calendar");
    assert!(cal_dir.join(".git").exists(), "Xandikos made its default calendar");

    let gateway = procs::gateway(&data, &upstream, &director.url());
    // The recipe, as printed.
    sb.replace(STORAGE, &storage.display().to_string());
    sb.replace(DATA, &data.display().to_string());
    let recipe = block("docs/servers.md", FIRST);
    assert!(recipe.text.contains(STORAGE) && recipe.text.contains(DATA), "{recipe:?}");
    sb.run(&sb.script(&recipe), &env);
    assert!(cal_dir.join(".git/hooks/post-commit").exists(), "the loop installed the hook");

    let topic = procs::advertised_topic(&format!("{}{}", gateway.url(), &cal[1..])).await;
    let mut ws = procs::subscribe_through_gateway(&gateway, cal, &topic).await;
    let sync_token = || async {
        procs::alice_prop(
            &format!("{upstream}{}", &cal[1..]),
            r#"<propfind xmlns="DAV:"><prop><sync-token/></prop></propfind>"#,
            "sync-token",
        )
        .await
    };

    // 1. A commit made with git in the collection, outside HTTP.
    std::fs::write(cal_dir.join("oob.ics"), procs::event("oob")).unwrap();
    let git = |args: &[&str]| {
        let mut cmd = Command::new("git");
        procs::clean_env(&mut cmd);
        let out = cmd
            .current_dir(&cal_dir)
            .envs(env)
            .args(["-c", "user.name=Script", "-c", "user.email=script@example.org"])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    git(&["add", "oob.ics"]);
    git(&["commit", "-q", "-m", "an event added by a script"]);
    let frame = procs::next_frame(&mut ws).await;
    assert_eq!((frame["type"].as_str(), frame["topic"].as_str()), (Some("notify"), Some(topic.as_str())), "{frame}");
    let token = sync_token().await;
    assert_eq!(frame["sync_token"].as_str(), Some(token.as_str()), "Xandikos's new sync-token: {frame}");
    assert_eq!(git(&["rev-parse", "HEAD^{tree}"]).trim(), token);

    // 2. A change written directly to Xandikos (not through the gateway): Xandikos's own commit
    //    runs the hook too.
    let status = procs::dav("PUT", &format!("{upstream}{}direct.ics", &cal[1..]), &procs::event("direct")).await;
    assert_eq!(status, 201, "{}", std::fs::read_to_string(&log).unwrap_or_default());
    let frame = procs::next_frame(&mut ws).await;
    assert_eq!(frame["topic"], topic.as_str(), "{frame}");
    assert_eq!(frame["sync_token"].as_str(), Some(sync_token().await.as_str()));
}
