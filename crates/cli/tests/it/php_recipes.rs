//! Issue 14, "changes that bypass HTTP": the out-of-band recipes of docs/servers.md
//! for SabreDAV (SQLite triggers and a cron job) and DAViCal (a PostgreSQL trigger and a cron
//! job), run exactly as printed (only the server's folder or database name and the data
//! directory replaced) against the real servers, a real `davpush serve` and `davpush gateway`:
//! a change written into the server's database reaches a subscriber of the gateway.

use std::path::Path;
use std::process::Command;

use davpush_testkit::davical::Davical;
use davpush_testkit::sabredav::SabreDav;

use crate::procs;

const DOC: &str = "docs/servers.md";
const DATA: &str = "/var/lib/davpush";

/// Runs a documented block with `sh`, `davpush` (the binary under test) on `PATH`, the Director
/// named by `gateway_toml`, `env` added; returns stdout, panics on failure.
fn run_block(text: &str, cwd: &Path, gateway_toml: &Path, env: &[(&str, String)]) -> String {
    let mut cmd = Command::new("sh");
    procs::clean_env(&mut cmd);
    cmd.current_dir(cwd).env("PATH", procs::path_with_davpush()).env("DAVPUSH_GATEWAY_CONFIG", gateway_toml);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.arg("-c").arg(text).output().unwrap();
    assert!(
        out.status.success(),
        "{text}\nexit {}: {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn block(first: &str) -> String {
    crate::documented::block(DOC, first).text
}

fn gateway_toml(dir: &Path, director: &procs::Proc) -> std::path::PathBuf {
    let path = dir.join("gateway.toml");
    std::fs::write(&path, format!("director_url = {:?}\n", director.url())).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_14_the_sabredav_outbox_recipe_notifies_subscribers_of_the_gateway() {
    let Some(sabre) = SabreDav::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("davpush");
    let srv = sabre.dir.display().to_string();
    let fill = |b: String| b.replace("/srv/sabredav", &srv).replace(DATA, &data.display().to_string());
    let triggers = fill(block("sqlite3 /srv/sabredav/db.sqlite <<'EOF'"));
    let job = fill(block("db=/srv/sabredav/db.sqlite"));

    let director = procs::director(&data);
    let toml = gateway_toml(dir.path(), &director);
    run_block(&triggers, dir.path(), &toml, &[]);
    // The gateway's upstream is the mount point (docs): it is published at `/`.
    let gateway = procs::gateway(&data, &sabre.dav_url(), &director.url());
    let cal = SabreDav::calendar_path("alice");
    let public = cal.strip_prefix("/dav.php").unwrap();
    let topic = procs::advertised_topic(&format!("{}{}", gateway.url(), &public[1..])).await;
    let mut ws = procs::subscribe_through_gateway(&gateway, public, &topic).await;

    // An import that writes SabreDAV's database directly, as SabreDAV's own PDO backend does.
    let ics = procs::event("imported").replace('\'', "''");
    let sql = format!(
        "INSERT INTO calendarobjects (calendarid, uri, calendardata, lastmodified, etag, size, componenttype) \
         SELECT id, 'imported.ics', '{ics}', 0, 'e', {}, 'VEVENT' FROM calendars WHERE principaluri = 'principals/alice'; \
         UPDATE calendars SET ctag = ctag + 1 WHERE principaluri = 'principals/alice';",
        ics.len()
    );
    let status = Command::new("sqlite3").arg(sabre.database()).arg(&sql).status().unwrap();
    assert!(status.success());
    let queued = |db: &Path| {
        let out = Command::new("sqlite3").arg(db).arg("SELECT count(*) FROM davpush_outbox").output().unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    assert_eq!(queued(&sabre.database()), "1");

    // The cron job's run: one notification, with the gateway's topic and no sync-token.
    run_block(&job, dir.path(), &toml, &[]);
    let frame = procs::next_frame(&mut ws).await;
    assert_eq!(frame["type"], "notify", "{frame}");
    assert_eq!(frame["topic"], topic.as_str());
    assert!(frame.get("sync_token").is_none_or(|t| t.is_null()), "{frame}");
    assert_eq!(queued(&sabre.database()), "0", "notified, so no longer queued");
    // The change is real: the event is there through the gateway.
    let status = procs::dav("GET", &format!("{}{}imported.ics", gateway.url(), &public[1..]), "").await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_14_the_davical_trigger_recipe_notifies_subscribers_of_the_gateway() {
    let Some(davical) = Davical::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("davpush");
    let db = davical.database.clone();
    let fill = |b: String| b.replace("-d davical ", &format!("-d {db} ")).replace(DATA, &data.display().to_string());
    let trigger = fill(block("psql -d davical <<'EOF'"));
    let job = fill(block("psql -d davical -qXAt -c 'SELECT max(id), path FROM davpush_outbox GROUP BY path' |"));
    assert!(trigger.contains(&db) && job.contains(&db), "{trigger}\n{job}");
    let pg = [
        ("PGHOST", davical.pg.host.clone()),
        ("PGPORT", davical.pg.port.to_string()),
        ("PGUSER", davical.pg.user.clone()),
    ];

    let director = procs::director(&data);
    let toml = gateway_toml(dir.path(), &director);
    run_block(&trigger, dir.path(), &toml, &pg);
    // The gateway's upstream is the mount point (docs): it is published at `/`.
    let gateway = procs::gateway(&data, &format!("{}caldav.php/", davical.url), &director.url());
    // A calendar and an event through the gateway: DAViCal's own writes are not queued.
    let cal = "/alice/calendar/";
    let url = format!("{}{}", gateway.url(), &cal[1..]);
    assert_eq!(procs::dav("MKCALENDAR", &url, "").await, 201, "{}", davical.log());
    assert_eq!(procs::dav("PUT", &format!("{url}e1.ics"), &procs::event("e1")).await, 201);
    let queued = || davical.psql("SELECT count(*) FROM davpush_outbox").trim().to_owned();
    assert_eq!(queued(), "0", "writes through HTTP are the gateway's to notify");
    let topic = procs::advertised_topic(&url).await;
    let mut ws = procs::subscribe_through_gateway(&gateway, cal, &topic).await;

    // Another tool edits the event in DAViCal's database.
    davical.psql(
        "UPDATE caldav_data SET caldav_data = replace(caldav_data, 'SUMMARY:e1', 'SUMMARY:edited') \
         WHERE dav_name = '/alice/calendar/e1.ics'",
    );
    assert_eq!(queued(), "1");

    run_block(&job, dir.path(), &toml, &pg);
    let frame = procs::next_frame(&mut ws).await;
    assert_eq!(frame["type"], "notify", "{frame}");
    assert_eq!(frame["topic"], topic.as_str());
    assert_eq!(queued(), "0", "notified, so no longer queued");
    let text = reqwest::Client::new()
        .get(format!("{url}e1.ics"))
        .header("Authorization", procs::basic(procs::ALICE.0, procs::ALICE.1))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("SUMMARY:edited"), "{text}");
}
