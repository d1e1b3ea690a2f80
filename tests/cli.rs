//! The `leadline` binary as an operator uses it: help on every command, `token create` and
//! `user create` against a data directory, `import` and `export` of files, config errors, and
//! a clean exit on SIGTERM.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn leadline() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_leadline"));
    c.env("LEADLINE_LOG", "warn").env_remove("LEADLINE_CONFIG");
    c
}

fn run(args: &[&str], dir: &std::path::Path) -> (bool, String, String) {
    let out = leadline()
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run leadline");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn help_on_every_command() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        vec!["--help"],
        vec!["serve", "--help"],
        vec!["token", "--help"],
        vec!["token", "create", "--help"],
        vec!["user", "--help"],
        vec!["user", "create", "--help"],
        vec!["bench", "--help"],
        vec!["bench", "ingest", "--help"],
        vec!["bench", "import", "--help"],
        vec!["bench", "search", "--help"],
        vec!["import", "--help"],
        vec!["export", "--help"],
        vec!["reindex", "--help"],
        vec!["plugins", "check", "--help"],
        vec!["plugins", "test", "--help"],
        vec!["rescore", "--help"],
        vec!["bench", "score", "--help"],
    ] {
        let (ok, out, err) = run(&args, dir.path());
        assert!(ok, "{args:?} failed: {err}");
        assert!(out.contains("Usage:"), "{args:?}: {out}");
    }
    let (_, out, _) = run(&["serve", "--help"], dir.path());
    for flag in [
        "--listen",
        "--data-dir",
        "--plugins-dir",
        "--log-format",
        "--config",
    ] {
        assert!(out.contains(flag), "serve --help lacks {flag}");
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_ready(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            let _ = s.write_all(b"GET /readyz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
            let mut first = String::new();
            let _ = BufReader::new(s).read_line(&mut first);
            if first.contains(" 200 ") {
                return;
            }
        }
        assert!(Instant::now() < deadline, "server never became ready");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn http_get(port: u16, path: &str, token: &str) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\nconnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    std::io::Read::read_to_string(&mut s, &mut out).unwrap();
    out
}

#[test]
fn token_and_user_create_work_on_the_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data_s = data.to_str().unwrap();
    let (ok, _, err) = run(
        &["token", "create", "--user", "bob", "--data-dir", data_s],
        dir.path(),
    );
    assert!(
        !ok && err.contains("--role"),
        "unknown user without --role must fail clearly: {err}"
    );
    let (ok, token, err) = run(
        &[
            "token",
            "create",
            "--user",
            "bob",
            "--role",
            "rep",
            "--data-dir",
            data_s,
        ],
        dir.path(),
    );
    assert!(ok, "{err}");
    let token = token.trim().to_owned();
    assert!(token.starts_with("ll_"));
    // A name is checked as the API checks it, and found trimmed as it is stored.
    let long = "x".repeat(101);
    for bad in ["", "   ", long.as_str()] {
        let (ok, _, err) = run(
            &[
                "token",
                "create",
                "--user",
                bad,
                "--role",
                "rep",
                "--data-dir",
                data_s,
            ],
            dir.path(),
        );
        assert!(!ok && err.contains("--user: name"), "{bad:?}: {err}");
    }
    let (ok, _, err) = run(
        &["token", "create", "--user", "  bob ", "--data-dir", data_s],
        dir.path(),
    );
    assert!(ok, "{err}");
    let (ok, _, err) = run(
        &[
            "token",
            "create",
            "--user",
            "bob",
            "--role",
            "admin",
            "--data-dir",
            data_s,
        ],
        dir.path(),
    );
    assert!(!ok && err.contains("role"), "{err}");

    let mut child = leadline()
        .args([
            "user",
            "create",
            "--name",
            "Mia",
            "--role",
            "manager",
            "--email",
            "mia@example.com",
            "--password-stdin",
            "--data-dir",
            data_s,
        ])
        .current_dir(dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"a long password\n")
        .unwrap();
    assert!(child.wait_with_output().unwrap().status.success());

    let port = free_port();
    let mut server = leadline()
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
            data_s,
        ])
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    wait_ready(port);
    let me = http_get(port, "/v1/me", &token);
    assert!(me.starts_with("HTTP/1.1 200"), "{me}");
    assert!(
        me.contains("\"name\":\"bob\"") && me.contains("\"role\":\"rep\""),
        "{me}"
    );

    // While the server runs, the CLI refuses clearly instead of corrupting anything.
    let (ok, _, err) = run(
        &["token", "create", "--user", "bob", "--data-dir", data_s],
        dir.path(),
    );
    assert!(!ok && err.contains("in use"), "{err}");

    unsafe { libc::kill(server.id() as i32, libc::SIGTERM) };
    let status = server.wait().unwrap();
    assert!(status.success(), "SIGTERM must exit 0, got {status:?}");
    // The users existed before the server started, so it printed no admin token.
    let mut out = String::new();
    std::io::Read::read_to_string(&mut server.stdout.take().unwrap(), &mut out).unwrap();
    assert!(!out.contains("LEADLINE_ADMIN_TOKEN"), "{out}");
}

#[test]
fn misspelled_config_key_stops_the_server_with_its_name() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("leadline.toml"),
        "lisen = \"127.0.0.1:1\"\n",
    )
    .unwrap();
    let (ok, _, err) = run(&["serve"], dir.path());
    assert!(!ok);
    assert!(err.contains("lisen"), "{err}");
}

#[test]
fn misspelled_env_var_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let out = leadline()
        .args([
            "token",
            "create",
            "--user",
            "x",
            "--role",
            "rep",
            "--data-dir",
            "d",
        ])
        .env("LEADLINE_DATA_DIRR", "oops")
        .current_dir(dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("LEADLINE_DATA_DIRR") && err.contains("LEADLINE_DATA_DIR"),
        "{err}"
    );
}

#[test]
fn a_server_logging_only_errors_still_reports_a_misspelled_env_var() {
    let dir = tempfile::tempdir().unwrap();
    // A start that fails early (the search index's directory is a file) ends the process
    // right after the warnings are given.
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    std::fs::write(dir.path().join("data/search"), "not a directory").unwrap();
    let out = leadline()
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("LEADLINE_LOG", "error")
        .env("LEADLINE_LISTN", "127.0.0.1:1")
        .current_dir(dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("LEADLINE_LISTN") && err.contains("LEADLINE_LISTEN"),
        "{err}"
    );
}

#[test]
fn starts_with_no_configuration_and_stops_on_sigint() {
    let dir = tempfile::tempdir().unwrap();
    // A first start that fails (the search index's directory is a file) creates no admin,
    // so the start after the fix still prints its one-time token.
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    std::fs::write(dir.path().join("data/search"), "not a directory").unwrap();
    let (ok, out, err) = run(&["serve", "--listen", "127.0.0.1:0"], dir.path());
    assert!(!ok && err.contains("search index"), "{err}");
    assert!(!out.contains("LEADLINE_ADMIN_TOKEN"), "{out}");
    std::fs::remove_file(dir.path().join("data/search")).unwrap();
    // Everything defaulted except the port, so parallel test runs do not collide on 8080.
    let port = free_port();
    let mut server = leadline()
        .args(["serve"])
        .env("LEADLINE_LISTEN", format!("127.0.0.1:{port}"))
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(server.stdout.take().unwrap());
    let mut line = String::new();
    let mut token = None;
    while stdout.read_line(&mut line).unwrap() > 0 {
        if let Some(t) = line.trim().strip_prefix("LEADLINE_ADMIN_TOKEN=") {
            token = Some(t.to_owned());
            break;
        }
        line.clear();
    }
    let token = token.expect("first start prints the admin token");
    wait_ready(port);
    assert!(
        dir.path().join("data/leadline.redb").exists(),
        "creates ./data"
    );
    assert!(http_get(port, "/v1/me", &token).starts_with("HTTP/1.1 200"));
    unsafe { libc::kill(server.id() as i32, libc::SIGINT) };
    assert!(server.wait().unwrap().success());
}

#[test]
fn import_reports_rejects_by_line_and_a_second_run_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("leads.csv");
    // line 1 header; the quoted note spans lines 3-4; line 5 repeats line 2; line 6 is bad
    std::fs::write(
        &file,
        "Name,Email,Mobile,Company,Employees,Notes\n\
         王小明,wang@example.cn,13812345678,示例科技,120,\n\
         Ann Lee,ANN@ACME.COM,+1 415 555 0100,Acme,,\"met at expo\nwants a demo\"\n\
         王小明,Wang@Example.cn ,138-1234-5678,示例科技,,\n\
         Bad Row,bad@acme.com,,Acme,lots,\n\
         Bo,bo@,(138) 0000-1111,Acme,,\n",
    )
    .unwrap();
    let path = file.to_str().unwrap();

    let (ok, out, err) = run(&["import", path, "--dry-run"], dir.path());
    assert!(ok, "{err}");
    assert!(out.contains("5 rows"), "{out}");
    assert!(out.contains("dry run: nothing was written"), "{out}");

    let (ok, out, err) = run(&["import", path], dir.path());
    assert!(ok, "{err}");
    assert!(
        out.contains("5 rows")
            && out.contains("3 were created")
            && out.contains("1 unchanged")
            && out.contains("1 rejected"),
        "{out}"
    );
    let rejects = std::fs::read_to_string(dir.path().join("leads.csv.rejects.csv")).unwrap();
    let mut lines = rejects.lines();
    assert_eq!(lines.next(), Some("line,errors,row"));
    let bad = lines.next().expect("one rejected row");
    assert!(bad.starts_with("6,\"company_size:"), "{bad}");
    assert!(bad.contains("Bad Row"), "{bad}");
    assert_eq!(lines.next(), None);

    let (ok, out, err) = run(&["import", path], dir.path());
    assert!(ok, "{err}");
    assert!(
        out.contains("0 were created, 0 merged, 4 unchanged, 1 rejected"),
        "{out}"
    );

    let missing = dir.path().join("no-such-dir");
    let (ok, _, err) = run(
        &["export", "--data-dir", missing.to_str().unwrap()],
        dir.path(),
    );
    assert!(!ok && err.contains("no store"), "{err}");
    assert!(!missing.exists(), "an export creates no store");
    for cmd in [&["reindex"][..], &["rescore", "--dry-run"]] {
        let mut args = cmd.to_vec();
        args.extend(["--data-dir", missing.to_str().unwrap()]);
        let (ok, _, err) = run(&args, dir.path());
        assert!(!ok && err.contains("no store"), "{cmd:?}: {err}");
        assert!(!missing.exists(), "{cmd:?} creates no store");
    }

    // The reject file may not be the file imported, and a path that cannot be written stops
    // the import before any row is written.
    let (ok, _, err) = run(&["import", path, "--rejects", path], dir.path());
    assert!(!ok && err.contains("is the file being imported"), "{err}");
    assert!(std::fs::read_to_string(&file).unwrap().contains("Bad Row"));
    let elsewhere_dir = dir.path().join("elsewhere");
    let elsewhere = elsewhere_dir.to_str().unwrap();
    let other = dir.path().join("more.csv");
    std::fs::write(
        &other,
        "name,email,employees
New,new@acme.com,
Bad,b@acme.com,lots
",
    )
    .unwrap();
    let nowhere = dir.path().join("no-such-dir/r.csv");
    let (ok, _, err) = run(
        &[
            "import",
            other.to_str().unwrap(),
            "--rejects",
            nowhere.to_str().unwrap(),
            "--data-dir",
            elsewhere,
        ],
        dir.path(),
    );
    assert!(!ok && err.contains("No such file"), "{err}");
    // Nothing was written: the same file now creates its good row.
    let (ok, out, err) = run(
        &["import", other.to_str().unwrap(), "--data-dir", elsewhere],
        dir.path(),
    );
    assert!(ok, "{err}");
    assert!(out.contains("1 were created"), "{out}");
    // Fixed and imported again: no stale reject file is left behind.
    let stale = dir.path().join("more.csv.rejects.csv");
    assert!(stale.exists());
    std::fs::write(
        &other,
        "name,email,employees
New,new@acme.com,
Bad,b@acme.com,5
",
    )
    .unwrap();
    let (ok, _, err) = run(
        &["import", other.to_str().unwrap(), "--data-dir", elsewhere],
        dir.path(),
    );
    assert!(ok, "{err}");
    assert!(!stale.exists(), "the old reject file is gone");

    let (ok, out, err) = run(&["export", "--format", "ndjson"], dir.path());
    assert!(ok, "{err}");
    let leads: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(leads.len(), 3);
    let bo = leads.iter().find(|l| l["name"] == "Bo").expect("Bo");
    assert_eq!(
        bo["flags"]["invalid_email"], true,
        "an import flags a bad email"
    );
    assert_eq!(bo["phone"], "+8613800001111");
    let out_file = dir.path().join("out.csv");
    let (ok, _, err) = run(
        &[
            "export",
            "--filter",
            "company=x",
            "--out",
            out_file.to_str().unwrap(),
        ],
        dir.path(),
    );
    assert!(
        !ok && err.contains("company"),
        "unknown filters are refused: {err}"
    );
    let (ok, _, err) = run(
        &[
            "export",
            "--filter",
            "sort=created_at",
            "--out",
            out_file.to_str().unwrap(),
        ],
        dir.path(),
    );
    assert!(ok, "{err}");
    let csv = std::fs::read_to_string(&out_file).unwrap();
    assert_eq!(csv.lines().count(), 4);
    assert!(csv.lines().nth(1).unwrap().contains("wang@example.cn"));

    // the search index is rebuilt from the store into a fresh directory, then swapped in
    let (ok, out, err) = run(&["reindex"], dir.path());
    assert!(ok, "{err}");
    assert!(out.contains("reindexed 3 leads"), "{out}");
    assert!(dir.path().join("data/search/meta.json").exists());
    assert!(!dir.path().join("data/search.new").exists());
    let (ok, token, err) = run(
        &["token", "create", "--user", "ops", "--role", "admin"],
        dir.path(),
    );
    assert!(ok, "{err}");
    let port = free_port();
    let mut server = leadline()
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_ready(port);
    let found = http_get(port, "/v1/search?q=%E5%B0%8F%E6%98%8E", token.trim());
    let _ = server.kill();
    let _ = server.wait();
    assert!(found.contains("\"total\":1"), "{found}");

    // A script that does not compile stops the tools that run the rules, naming it: the
    // built-in rules would otherwise write scores nobody chose.
    std::fs::create_dir_all(dir.path().join("plugins")).unwrap();
    std::fs::write(
        dir.path().join("plugins/broken.rhai"),
        "fn score(lead, stats) {",
    )
    .unwrap();
    for cmd in [&["rescore"][..], &["import", path]] {
        let (ok, _, err) = run(cmd, dir.path());
        assert!(!ok && err.contains("broken.rhai"), "{cmd:?}: {err}");
    }
    // A script that compiles but fails on the leads: the rescore says so and fails.
    std::fs::write(
        dir.path().join("plugins/broken.rhai"),
        "fn score(lead, stats) { throw \"broken rule\"; }",
    )
    .unwrap();
    let (ok, out, err) = run(&["rescore", "--dry-run"], dir.path());
    assert!(!ok, "{out}");
    assert!(
        err.contains("the score hook failed on 3 leads") && err.contains("broken.rhai"),
        "{err}"
    );
}

#[test]
fn plugins_check_and_test_pass_on_the_shipped_rules_and_show_a_diff_after_an_edit() {
    let dir = tempfile::tempdir().unwrap();
    let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("plugins");
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(plugins.join("tests")).unwrap();
    for script in ["scoring.rhai", "routing.rhai", "sla.rhai", "nurture.rhai"] {
        std::fs::copy(shipped.join(script), plugins.join(script)).unwrap();
    }
    for case in std::fs::read_dir(shipped.join("tests")).unwrap() {
        let case = case.unwrap().path();
        std::fs::copy(&case, plugins.join("tests").join(case.file_name().unwrap())).unwrap();
    }
    let dir_arg = plugins.to_str().unwrap();
    let (ok, out, err) = run(&["plugins", "check", "--plugins-dir", dir_arg], dir.path());
    assert!(ok, "{out}{err}");
    assert!(out.contains("scoring.rhai: hooks score"), "{out}");
    let (ok, out, err) = run(&["plugins", "test", "--plugins-dir", dir_arg], dir.path());
    assert!(ok, "{out}{err}");
    assert!(out.contains("9 passed, 0 failed"), "{out}");

    // The admin raises the demo rule to 35 points: the case that expects 30 fails, readably.
    let script = std::fs::read_to_string(plugins.join("scoring.rhai")).unwrap();
    let edited = script.replace(
        r#"rule: "requested a demo or trial", points: 30"#,
        r#"rule: "requested a demo or trial", points: 35"#,
    );
    assert_ne!(edited, script);
    std::fs::write(plugins.join("scoring.rhai"), edited).unwrap();
    let (ok, out, _) = run(&["plugins", "test", "--plugins-dir", dir_arg], dir.path());
    assert!(!ok, "{out}");
    assert!(out.contains("FAIL cto_demo_request_is_sql.toml"), "{out}");
    assert!(out.contains("total: expected 60, got 65"), "{out}");

    // Cases of the other hooks compare the whole answer and name what differs by its path.
    let script = std::fs::read_to_string(plugins.join("nurture.rhai")).unwrap();
    let edited = script.replace(
        r#"enroll("high_intent")"#,
        r#"[enroll("hot"), task("Call")]"#,
    );
    assert_ne!(edited, script);
    std::fs::write(plugins.join("nurture.rhai"), edited).unwrap();
    let (ok, out, _) = run(&["plugins", "test", "--plugins-dir", dir_arg], dir.path());
    assert!(!ok, "{out}");
    assert!(
        out.contains("FAIL crossing_60_is_high_intent.toml"),
        "{out}"
    );
    assert!(
        out.contains(r#"result[0].enroll: expected "high_intent", got "hot""#),
        "{out}"
    );
    assert!(
        out.contains(r#"result: expected 1 items, got 2 (also [{"task":"Call"}])"#),
        "{out}"
    );
    assert!(out.contains("7 passed, 2 failed"), "{out}");

    // A script that does not compile fails the check with its line.
    std::fs::write(
        plugins.join("broken.rhai"),
        "fn score(lead, stats) {\n  [\n}",
    )
    .unwrap();
    let (ok, out, _) = run(&["plugins", "check", "--plugins-dir", dir_arg], dir.path());
    assert!(!ok, "{out}");
    assert!(out.contains("FAIL broken.rhai: does not compile"), "{out}");
}

#[test]
fn settings_for_a_script_that_does_not_exist_are_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("plugins")).unwrap();
    std::fs::write(
        dir.path().join("plugins/scoring.rhai"),
        include_str!("../plugins/scoring.rhai"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("leadline.toml"),
        "[plugins.config.scorng]\ntarget_industries = [\"SaaS\"]\n",
    )
    .unwrap();
    let (ok, _, err) = run(
        &["token", "create", "--user", "a", "--role", "rep"],
        dir.path(),
    );
    assert!(ok, "{err}");
    assert!(
        err.contains("[plugins.config.scorng] names no script"),
        "{err}"
    );
    // Nor does checking a plugins directory that is not there pass.
    let (ok, _, err) = run(
        &["plugins", "check", "--plugins-dir", "plugnis"],
        dir.path(),
    );
    assert!(!ok && err.contains("no plugins directory"), "{err}");
}
