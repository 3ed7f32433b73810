//! `snapport plugin new` and `snapport plugin build`, as an author uses them: from an
//! empty folder to a component the host loads and that serves real bytes, in Rust and in
//! C; and the refusals (bad names, non-empty folders, missing projects, missing clang, a
//! plugin that pulls in WASI).

mod common;

use common::{p, Home};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `snapport ARGS` run in `cwd`, sharing the repository's guest toolchain; `plugin build`
/// gets one target folder for every test, so the guest `core`/`alloc` build once a run.
fn snapport_in(cwd: &Path, args: &[&str]) -> Output {
    let mut args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    if args[..2] == ["plugin", "build"] {
        let shared = repo().join("target/guest-demo");
        args.extend(["--target-dir".into(), shared.display().to_string()]);
    }
    Command::new(env!("CARGO_BIN_EXE_snapport"))
        .args(&args)
        .current_dir(cwd)
        .env("SNAPPORT_TOOLCHAIN_DIR", repo().join(".toolchain"))
        .output()
        .expect("running snapport")
}

fn ok_in(cwd: &Path, args: &[&str]) -> Output {
    let out = snapport_in(cwd, args);
    assert!(
        out.status.success(),
        "snapport {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    out
}

/// The one error line of a command that must fail with `code`.
fn fails_in(cwd: &Path, code: i32, args: &[&str]) -> String {
    let out = snapport_in(cwd, args);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(code), "snapport {args:?}: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    err
}

fn clang_ready() -> bool {
    let runs = |prog: &str| Command::new(prog).arg("--version").output().is_ok();
    runs("clang") && runs("wasm-ld") && Path::new("/usr/lib/wasm32-wasi/libc.a").exists()
}

fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let path = e.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

/// The component a build wrote: a WebAssembly component (layer 1), not a core module.
fn assert_component(path: &Path) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(&bytes[..4], b"\0asm", "{}", path.display());
    assert_eq!(&bytes[4..8], &[0x0d, 0x00, 0x01, 0x00], "a component");
}

/// Bytes with data, a hole and a pattern, `mib` MiB.
fn content(mib: usize, seed: u8) -> Vec<u8> {
    let mut bytes = vec![0u8; mib << 20];
    for (i, b) in bytes.iter_mut().enumerate().skip(4096).take(300_000) {
        *b = (i % 251) as u8 ^ seed;
    }
    bytes
}

/// Serves what the templates serve through the plugin at `wasm`: `disk.raw` in the pool's
/// folder (and, `with_device`, the granted device lun0). Each is listed and exports its
/// exact bytes, so the built component really runs in the host and maps the right bytes.
fn serves(wasm: &Path, with_device: bool) {
    let home = Home::new();
    let folder = home.path().join("volumes");
    std::fs::create_dir(&folder).unwrap();
    let mut volumes = vec![("disk", folder.join("disk.raw"), content(2, 0))];
    if with_device {
        volumes.push(("lun0", home.path().join("lun.img"), content(3, 0x5a)));
    }
    for (_, path, bytes) in &volumes {
        std::fs::write(path, bytes).unwrap();
    }
    let devices = if with_device {
        format!("devices = {{ lun0 = \"{}\" }}\n", p(&volumes[1].1))
    } else {
        String::new()
    };
    home.write_config(&format!(
        "[pools.t]\nplugin = \"{}\"\nfolders = [\"{}\"]\n{devices}",
        p(wasm),
        p(&folder)
    ));
    let out = home.ok(&["get", "vd", "-n", "t", "-o", "json"]);
    let text = String::from_utf8_lossy(&out.stdout);
    for (name, path, bytes) in &volumes {
        assert!(
            text.contains(&format!("vd/{name}")),
            "{name} not listed: {text}"
        );
        let exported = home.out(&format!("{name}.raw"));
        let address = format!("vd/{name}");
        home.ok(&["download", &address, "-n", "t", "-q", "-o", p(&exported)]);
        assert!(
            std::fs::read(&exported).unwrap() == *bytes,
            "{name}: exported bytes differ from {}",
            path.display()
        );
    }
}

/// `plugin test` (the conformance suite) on the new component, with its own scratch
/// pool: it exits 0, and the report says the template really wrote and read back bytes
/// (`write.read-back`) and read a listed volume whole (`read.whole`) — a template that
/// declared nothing would pass on skips alone.
fn passes_plugin_test(cwd: &Path, wasm: &Path) {
    let out = snapport_in(cwd, &["plugin", "test", p(wasm), "-o", "json"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "plugin test {}: {err}\n{}",
        wasm.display(),
        String::from_utf8_lossy(&out.stdout)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for name in ["write.read-back", "read.whole", "volume.delete"] {
        let case = report["cases"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no case {name}: {report}"));
        assert_eq!(case["status"], "ok", "{case}");
    }
}

/// Whether the C toolchain is here; if not, the test is skipped with a reason, except
/// under CI (`CI` set), where a missing toolchain must fail the run, not hide it.
fn clang_or_skip() -> bool {
    if clang_ready() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI is set but clang, wasm-ld or wasi-libc is missing: \
         apt-get install -y clang lld wasi-libc libclang-rt-14-dev-wasm32"
    );
    eprintln!("skip: clang, wasm-ld or wasi-libc missing; the C build cannot be tested");
    false
}

#[test]
fn a_c_plugin_from_an_empty_folder_builds_and_serves() {
    if !clang_or_skip() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    ok_in(tmp.path(), &["plugin", "new", "demo", "--lang", "c"]);
    let dir = tmp.path().join("demo");
    let files = files_under(&dir);
    for f in [
        "snapport-plugin.toml",
        "src/plugin.c",
        "src/snapport.h",
        "wit/backend.wit",
        "README.md",
    ] {
        assert!(files.contains(&f.to_string()), "{f} missing from {files:?}");
    }
    let wit = std::fs::read_to_string(dir.join("wit/backend.wit")).unwrap();
    assert_eq!(
        wit,
        std::fs::read_to_string(repo().join("wit/backend.wit")).unwrap()
    );

    ok_in(&dir, &["plugin", "build"]);
    let wasm = dir.join("demo.wasm");
    assert_component(&wasm);
    // No temporary left next to it.
    assert!(
        !files_under(&dir).iter().any(|f| f.contains(".tmp")),
        "{:?}",
        files_under(&dir)
    );
    let home = Home::new();
    home.write_config(&format!("[pools.t]\nplugin = \"{}\"\n", p(&wasm)));
    let out = home.ok(&["plugin", "list", "-o", "json"]);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let row = doc
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "demo")
        .unwrap_or_else(|| panic!("demo not listed: {doc}"));
    for cap in ["read", "write", "volume-create", "volume-delete"] {
        assert!(
            row["capabilities"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c == cap),
            "{row}"
        );
    }
    serves(&wasm, true);
    passes_plugin_test(tmp.path(), &wasm);

    // -o FILE from elsewhere.
    let other = tmp.path().join("elsewhere.wasm");
    ok_in(tmp.path(), &["plugin", "build", "demo", "-o", p(&other)]);
    assert_component(&other);
}

#[test]
fn a_rust_plugin_from_an_empty_folder_builds_and_serves() {
    let tmp = tempfile::tempdir().unwrap();
    ok_in(tmp.path(), &["plugin", "new", "demo"]);
    let dir = tmp.path().join("demo");
    let files = files_under(&dir);
    for f in [
        "Cargo.toml",
        "src/lib.rs",
        "vendor/snapport-plugin-sdk/Cargo.toml",
        "vendor/snapport-plugin-sdk/wit/backend.wit",
    ] {
        assert!(files.contains(&f.to_string()), "{f} missing from {files:?}");
    }
    let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
    assert!(manifest.contains("name = \"demo\""), "{manifest}");
    assert!(!manifest.contains("{{"), "{manifest}");

    // The template pins every dependency (Cargo.lock) and the build works offline
    // against it without changing it: a stale lock would be rewritten, or fail offline.
    let lock = std::fs::read_to_string(dir.join("Cargo.lock")).unwrap();
    assert!(lock.contains("name = \"demo\""), "{lock}");
    // Into the bundled plugins' target folder (`cargo xtask plugins`), where the
    // dependencies the template pins at the same versions are already compiled: what is
    // tested is that the template builds offline from its lock, not how long
    // wit-bindgen takes to compile once more.
    let out = Command::new(env!("CARGO_BIN_EXE_snapport"))
        .args(["plugin", "build", "--target-dir"])
        .arg(repo().join("target/guest"))
        .current_dir(&dir)
        .env("SNAPPORT_TOOLCHAIN_DIR", repo().join(".toolchain"))
        .env("CARGO_NET_OFFLINE", "true")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "offline build: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("Cargo.lock")).unwrap(),
        lock,
        "the build changed the template's Cargo.lock"
    );
    let wasm = dir.join("demo.wasm");
    assert_component(&wasm);
    serves(&wasm, false);
    passes_plugin_test(tmp.path(), &wasm);
}

#[test]
fn plugin_new_refuses_bad_names_and_used_folders() {
    let tmp = tempfile::tempdir().unwrap();
    for bad in ["../evil", "_x", "a b", "1abc", "x/y", "dé", ""] {
        let err = fails_in(tmp.path(), 2, &["plugin", "new", bad, "--lang", "c"]);
        assert!(err.contains("not a plugin name"), "{bad}: {err}");
    }
    assert!(files_under(tmp.path()).is_empty());
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);

    let used = tmp.path().join("used");
    std::fs::create_dir(&used).unwrap();
    std::fs::write(used.join("notes.txt"), b"mine").unwrap();
    let err = fails_in(
        tmp.path(),
        2,
        &["plugin", "new", "demo", "--lang", "c", "--path", p(&used)],
    );
    assert!(err.contains("not empty"), "{err}");
    assert_eq!(files_under(&used), vec!["notes.txt".to_string()]);

    let missing_parent = tmp.path().join("no/such/place");
    let err = fails_in(
        tmp.path(),
        2,
        &[
            "plugin",
            "new",
            "demo",
            "--lang",
            "c",
            "--path",
            p(&missing_parent),
        ],
    );
    assert!(err.contains("does not exist"), "{err}");

    // An empty folder given with --path is used.
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    ok_in(
        tmp.path(),
        &["plugin", "new", "demo", "--lang", "c", "--path", p(&empty)],
    );
    assert!(empty.join("snapport-plugin.toml").is_file());
    // Nothing but the two folders: no staging folder left behind.
    let mut left: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["empty", "used"]);
}

#[test]
fn plugin_build_refuses_what_is_not_a_project() {
    let tmp = tempfile::tempdir().unwrap();
    let err = fails_in(tmp.path(), 2, &["plugin", "build", "nowhere"]);
    assert!(err.contains("is not a folder"), "{err}");
    let err = fails_in(tmp.path(), 2, &["plugin", "build"]);
    assert!(err.contains("not a plugin project"), "{err}");
    std::fs::write(tmp.path().join("snapport-plugin.toml"), "name = \"../x\"\n").unwrap();
    let err = fails_in(tmp.path(), 2, &["plugin", "build"]);
    assert!(err.contains("not a plugin name"), "{err}");
}

#[test]
fn a_c_build_without_clang_says_what_to_install() {
    let tmp = tempfile::tempdir().unwrap();
    ok_in(tmp.path(), &["plugin", "new", "demo", "--lang", "c"]);
    let dir = tmp.path().join("demo");
    let empty_path = tmp.path().join("bin");
    std::fs::create_dir(&empty_path).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_snapport"))
        .args(["plugin", "build"])
        .current_dir(&dir)
        .env("PATH", &empty_path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(
        err.contains("needs clang")
            && err.contains("apt-get install -y clang lld wasi-libc libclang-rt-14-dev-wasm32"),
        "{err}"
    );
    assert!(!dir.join("demo.wasm").exists());
}

#[test]
fn a_c_plugin_that_pulls_in_wasi_is_refused_naming_the_import() {
    if !clang_or_skip() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    ok_in(tmp.path(), &["plugin", "new", "demo", "--lang", "c"]);
    let dir = tmp.path().join("demo");
    // printf writes to stdout through WASI's fd_write, which the sandbox does not have.
    std::fs::write(
        dir.join("src/chatty.c"),
        "#include <stdio.h>\n__attribute__((export_name(\"chatty\"))) void chatty(void) { printf(\"hi\\n\"); }\n",
    )
    .unwrap();
    let err = fails_in(&dir, 1, &["plugin", "build"]);
    assert!(
        err.contains("imports `wasi_snapshot_preview1::") && err.contains("no WASI"),
        "{err}"
    );
    assert!(!dir.join("demo.wasm").exists());
}

/// The C template's formatter (`sp_format` in snapport.h), compiled natively against a
/// stand-in for the generated bindings and run: every conversion the header promises
/// consumes its argument as the right type (a `%d` before a `%s` once made the `%s` read
/// an int as a pointer), and any other conversion stops the plugin through
/// `host::panicked` instead of misreading the arguments.
#[test]
fn the_c_templates_formatter_consumes_each_conversion() {
    if !clang_or_skip() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let fake = r#"
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
typedef struct { uint8_t *ptr; size_t len; } backend_plugin_string_t;
typedef struct { uint8_t tag; union { backend_plugin_string_t not_found; } val; }
    snapport_backend_types_backend_error_t;
static void backend_plugin_string_set(backend_plugin_string_t *s, const char *c) {
    s->ptr = (uint8_t *)c; s->len = strlen(c);
}
static void backend_plugin_string_dup(backend_plugin_string_t *s, const char *c) {
    s->len = strlen(c); s->ptr = malloc(s->len + 1); memcpy(s->ptr, c, s->len + 1);
}
static void backend_plugin_string_free(backend_plugin_string_t *s) {
    if (s->len) free(s->ptr); s->ptr = NULL; s->len = 0;
}
static void snapport_backend_host_log(uint8_t level, backend_plugin_string_t *s) {
    (void)level; (void)s;
}
static void snapport_backend_host_panicked(backend_plugin_string_t *s) {
    printf("panicked: %.*s\n", (int)s->len, (char *)s->ptr);
    exit(3);
}
"#;
    std::fs::write(tmp.path().join("backend_plugin.h"), fake).unwrap();
    let main = r#"
#include "snapport.h"
#include <stdio.h>
int main(int argc, char **argv) {
    char buf[256];
    sp_format(buf, sizeof buf, "%d|%s|%u|%x|%zu|%llu|%llx|%lld|%i|%s|%%", -42, "a",
              4000000000u, 0xbeefu, (size_t)123456789, 18446744073709551615ULL,
              0xdeadbeefcafeULL, -9000000000LL, 7, "end");
    puts(buf);
    sp_format(buf, 8, "%s", "truncated here");
    puts(buf);
    if (argc > 1) {
        sp_format(buf, sizeof buf, argv[1], 1.5);
        puts("not stopped");
    }
    return 0;
}
"#;
    std::fs::write(tmp.path().join("main.c"), main).unwrap();
    let bin = tmp.path().join("fmt");
    let cc = Command::new("clang")
        .args([
            "-std=c11",
            "-Wall",
            "-Wno-format-security",
            "-Wno-format-nonliteral",
        ])
        .arg("-I")
        .arg(tmp.path())
        .arg("-I")
        .arg(repo().join("crates/plugin-build/templates/c/src"))
        .arg(tmp.path().join("main.c"))
        .arg("-o")
        .arg(&bin)
        .output()
        .unwrap();
    assert!(
        cc.status.success(),
        "{}",
        String::from_utf8_lossy(&cc.stderr)
    );
    let out = Command::new(&bin).output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "-42|a|4000000000|beef|123456789|18446744073709551615|deadbeefcafe|-9000000000|7|end|%\n\
         truncat\n"
    );
    for bad in ["%f", "%5d", "%ld", "%p", "%c", "%"] {
        let out = Command::new(&bin).arg(bad).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(3), "{bad}: {text}");
        assert!(
            text.contains("panicked: sp_format: unsupported conversion"),
            "{bad}: {text}"
        );
    }
}
