//! The headless-Chromium harness itself (tests/src/browser.rs): a page served from a loopback
//! listener here is opened in a real Chromium, waited on, clicked, typed into and
//! screenshotted; blank pages must fail the blank check, and WebDriver errors and timed-out
//! waits must fail with what the page showed.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed step fails the test

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{TcpListener, TcpStream};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::time::{Duration, Instant};

use health_e2e::{screenshot_dir, Browser, Screenshot};
use serde_json::json;

const PAGE: &str = r#"<!doctype html>
<html><head><meta charset="utf-8"><title>harness page</title>
<style>
  body { font-family: sans-serif; margin: 20px; background: #fafafa; }
  h1 { color: #1a4d8f; }
  table { border-collapse: collapse; }
  td, th { border: 1px solid #888; padding: 4px 12px; }
  .bad { background: #e53935; color: white; }
  .ok { background: #43a047; color: white; }
</style></head>
<body>
<h1>Fleet health</h1>
<p id="status">loading</p>
<table>
  <tr><th>host</th><th>state</th><th>last report</th></tr>
  <tr><td>node-01</td><td class="ok">healthy</td><td>2 s ago</td></tr>
  <tr><td>node-02</td><td class="bad">critical</td><td>5 s ago</td></tr>
  <tr><td>node-03</td><td class="ok">healthy</td><td>1 s ago</td></tr>
</table>
<p><button id="btn" onclick="document.getElementById('clicks').innerText = String(++window.clicks)">
click me</button> clicks: <span id="clicks">0</span></p>
<p><input id="box"> last key: <span id="key">none</span></p>
<script>
  window.clicks = 0;
  document.addEventListener('keydown', e => { document.getElementById('key').innerText = e.key; });
  setTimeout(() => { document.getElementById('status').innerText = 'ready'; }, 300);
</script>
</body></html>"#;

const FLAT: &str = r#"<!doctype html><html><head><style>
html, body { margin: 0; height: 100%; background: rgb(30, 120, 200); }
</style></head><body></body></html>"#;

/// Serves PAGE at `/`, FLAT at `/flat` and 404 elsewhere, from a thread, for the test's life.
fn serve() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let _ = answer(stream);
        }
    });
    addr
}

fn answer(mut stream: TcpStream) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
    }
    let path = request_line.split_whitespace().nth(1).unwrap_or("/");
    let (status, body) = match path {
        "/" => ("200 OK", PAGE),
        "/flat" => ("200 OK", FLAT),
        _ => ("404 Not Found", "not found"),
    };
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )
}

fn timed<T>(what: &str, f: impl FnOnce() -> T) -> T {
    let t0 = Instant::now();
    let out = f();
    eprintln!("[timing] {what}: {:?}", t0.elapsed());
    out
}

/// The panic message of `f`, which must panic.
fn panic_message(f: impl FnOnce()) -> String {
    let err = catch_unwind(AssertUnwindSafe(f)).expect_err("expected a panic");
    err.downcast_ref::<String>()
        .cloned()
        .or_else(|| err.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

#[test]
fn page_is_driven_and_its_screenshot_is_not_blank() {
    let t0 = Instant::now();
    let addr = serve();
    let tmp = tempfile::tempdir().unwrap();
    let shots = screenshot_dir(tmp.path());
    let browser = timed("start", || Browser::start(1024, 768));

    timed("goto", || browser.goto(&format!("http://{addr}/")));
    let status = timed("wait_js for the delayed text", || {
        browser.wait_js(
            "the status to read ready",
            Duration::from_secs(10),
            "const s = document.getElementById('status').innerText; return s === 'ready' && s;",
        )
    });
    assert_eq!(status, json!("ready"));
    assert_eq!(browser.text("h1"), "Fleet health");
    assert!(
        browser.text("table").contains("node-02\tcritical"),
        "{}",
        browser.text("table")
    );
    let sum = browser.execute(
        "return arguments[0] + arguments[1];",
        vec![json!(2), json!(3)],
    );
    assert_eq!(sum, json!(5));

    browser.click("#btn");
    browser.click("#btn");
    browser.wait_js(
        "two clicks",
        Duration::from_secs(5),
        "return document.getElementById('clicks').innerText === '2';",
    );
    browser.send_keys("#box", "node-07");
    assert_eq!(
        browser.execute("return document.getElementById('box').value;", vec![]),
        json!("node-07")
    );
    browser.press_key(Browser::KEY_ESCAPE);
    browser.wait_js(
        "the Escape key event",
        Duration::from_secs(5),
        "return document.getElementById('key').innerText === 'Escape';",
    );

    let shot = timed("screenshot", || {
        browser.screenshot(&shots.join("harness-page.png"))
    });
    let (distinct, off) = shot.colour_stats();
    eprintln!(
        "page screenshot {}x{}: {distinct} colours, {off} pixels off background",
        shot.width, shot.height
    );
    assert_eq!((shot.width, shot.height), (1024, 768));
    shot.assert_not_blank();
    // What was written is the same image.
    let reloaded = Screenshot::load(&shot.path);
    assert_eq!(reloaded.colour_stats(), shot.colour_stats());

    browser.set_viewport_size(640, 480);
    let small = browser.screenshot(&shots.join("harness-page-640.png"));
    assert_eq!((small.width, small.height), (640, 480));
    small.assert_not_blank();

    timed("drop", || drop(browser));
    eprintln!("[timing] whole test: {:?}", t0.elapsed());
}

#[test]
fn blank_pages_fail_and_errors_say_what_went_wrong() {
    let addr = serve();
    let tmp = tempfile::tempdir().unwrap();
    let shots = screenshot_dir(tmp.path());
    let browser = Browser::start(800, 600);

    for (name, url) in [
        ("about-blank", "about:blank".to_string()),
        ("flat", format!("http://{addr}/flat")),
    ] {
        browser.goto(&url);
        let shot = browser.screenshot(&shots.join(format!("harness-{name}.png")));
        let reason = shot
            .blank_reason()
            .unwrap_or_else(|| panic!("{url} passed the blank check"));
        assert!(reason.contains("1 distinct colour"), "{url}: {reason}");
        let msg = panic_message(|| shot.assert_not_blank());
        assert_eq!(msg, reason);
    }
    blank_check_rejects_small_and_near_flat_images(tmp.path());

    // An error reply names the command and the driver's message.
    let msg = panic_message(|| {
        browser.execute("throw new Error('boom-4711');", vec![]);
    });
    assert!(
        msg.contains("execute script") && msg.contains("boom-4711"),
        "{msg}"
    );
    let msg = panic_message(|| browser.click("#no-such-element"));
    assert!(
        msg.contains("find element `#no-such-element`") && msg.contains("no such element"),
        "{msg}"
    );

    // A timed-out wait shows what the page showed; a throwing predicate counts as not yet.
    browser.goto(&format!("http://{addr}/"));
    let msg = panic_message(|| {
        browser.wait_js(
            "a row for node-99",
            Duration::from_millis(300),
            "return document.querySelector('#node-99').innerText;",
        );
    });
    assert!(msg.contains("waiting for a row for node-99"), "{msg}");
    assert!(msg.contains("script threw"), "{msg}");
    assert!(msg.contains(&format!("URL: http://{addr}/")), "{msg}");
    assert!(
        msg.contains("Fleet health") && msg.contains("node-02"),
        "{msg}"
    );
    // The session still works after those failures.
    assert_eq!(browser.text("h1"), "Fleet health");
}

/// Synthetic images at the edges of the thresholds: too small, and a few stray pixels on a
/// flat page (a cursor, a speck) are still blank.
fn blank_check_rejects_small_and_near_flat_images(dir: &Path) {
    let write_png = |name: &str, width: u32, height: u32, paint: &dyn Fn(u32, u32) -> [u8; 3]| {
        let path = dir.join(name);
        let file = std::fs::File::create(&path).unwrap();
        let mut encoder = png::Encoder::new(std::io::BufWriter::new(file), width, height);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().unwrap();
        let data: Vec<u8> = (0..height)
            .flat_map(|y| (0..width).flat_map(move |x| paint(x, y)))
            .collect();
        writer.write_image_data(&data).unwrap();
        writer.finish().unwrap();
        Screenshot::load(&path)
    };
    let noisy = |x: u32, y: u32| {
        [
            (x * 7 % 256) as u8,
            (y * 13 % 256) as u8,
            ((x + y) % 256) as u8,
        ]
    };
    let tiny = write_png("tiny.png", 50, 50, &noisy);
    assert!(
        tiny.blank_reason().unwrap().contains("50x50"),
        "{:?}",
        tiny.blank_reason()
    );
    let specks = write_png("specks.png", 400, 300, &|x, y| {
        if x < 20 && y < 10 {
            noisy(x, y)
        } else {
            [255, 255, 255]
        }
    });
    let reason = specks.blank_reason().unwrap();
    assert!(reason.contains("differ from the background"), "{reason}");
    let busy = write_png("busy.png", 400, 300, &noisy);
    assert_eq!(busy.blank_reason(), None);
}
