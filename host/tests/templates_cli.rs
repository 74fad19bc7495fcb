//! `nixtest templates` on the real binary: every line in order with a stable template id,
//! then the templates by count; `--json` one object per line; a missing file exits 2.

mod common;

fn templates(args: &[&str], stdin: &str) -> (Option<i32>, String, String) {
    let out = common::nixtest(&[&["templates"], args].concat(), &[], stdin);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const LOG: &str = "\
copying path '/nix/store/1b9p07z77phvv2hf6gm9f28syp39f1ag-glibc-2.38' from 'https://cache.nixos.org'
building '/nix/store/zzx6cs2a0iw3lr1wf8bb3dxkxl5f9mjh-hello-2.12.drv'...
copying path '/nix/store/9b0xgy0iqlwq8c4b0z6nqcdn3iamfjr4-bash-5.2' from 'https://cache.nixos.org'
error: builder for '/nix/store/q8h6zq0dfdk5xg9bfxka2xgc7fa2y10w-foo.drv' failed with exit code 2
";

#[test]
fn every_line_in_order_then_the_templates_by_count() {
    let (code, out, err) = templates(&["-"], LOG);
    assert_eq!(code, Some(0), "{err}");
    let lines: Vec<&str> = out.lines().collect();
    // The two copies share a template and an id; the others have their own.
    assert!(
        lines[0].starts_with("T1\tcopying path <*> from <*>"),
        "{out}"
    );
    assert!(lines[1].starts_with("T2\t"), "{out}");
    assert_eq!(lines[2], lines[0]);
    assert!(lines[3].starts_with("T3\terror: builder for <*> failed with exit code <*>"));
    assert!(out.contains("4 lines, 3 templates"), "{out}");
    assert!(out.contains("T1\t2\tcopying path <*> from <*>"), "{out}");
}

#[test]
fn json_has_one_object_per_line() {
    let (code, out, _) = templates(&["-", "--json"], LOG);
    assert_eq!(code, Some(0));
    let objects: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(objects.len(), 4);
    assert_eq!(objects[0]["line"], 1);
    assert_eq!(objects[0]["template_id"], objects[2]["template_id"]);
    assert_ne!(objects[0]["template_id"], objects[1]["template_id"]);
    assert!(
        objects[3]["text"]
            .as_str()
            .unwrap()
            .starts_with("error: builder")
    );
}

#[test]
fn a_missing_file_is_a_usage_error() {
    let (code, _, err) = templates(&["/nonexistent/log"], "");
    assert_eq!(code, Some(2));
    assert!(err.contains("cannot open /nonexistent/log"), "{err}");
}
