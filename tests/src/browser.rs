//! A real headless Chromium for the end-to-end tests of web pages: starts `chromedriver` on a
//! free loopback port, opens one W3C WebDriver session in Chromium (private profile, headless),
//! and drives it with a minimal WebDriver client written over std `TcpStream` + `serde_json`,
//! so a test can load a page, wait (bounded) for what it should show, click, type, and take
//! screenshots that are checked not to be blank.
//!
//! Binaries: Debian's `chromium` and `chromium-driver` (`/usr/bin/chromium`,
//! `/usr/bin/chromedriver`; tests/run.sh installs them); `HEALTH_CHROMIUM` and
//! `HEALTH_CHROMEDRIVER` override the paths. Screenshots go to [`screenshot_dir`].
//!
//! Every WebDriver error reply fails the test with the command and the driver's message.
//! Chromedriver runs in a process group of its own, so dropping a [`Browser`] ends the session
//! and then kills exactly that group (chromedriver and the Chromium it started), by id.

use std::collections::HashMap;
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use nix::sys::signal::{killpg, Signal};
use serde_json::{json, Value};

use crate::{free_port, Proc};

/// W3C's key for a web element reference in a WebDriver reply.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Longest a single WebDriver command may take before the test fails: above the session's
/// page-load and script timeouts (30 s), so those report first, with the driver's message.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(45);

/// How much of the page text a failed wait shows.
const BODY_TEXT_SHOWN: usize = 2000;

/// `/usr/bin/chromium` (Debian's launcher), or `HEALTH_CHROMIUM`.
pub fn chromium_binary() -> PathBuf {
    tool("HEALTH_CHROMIUM", "/usr/bin/chromium", "chromium")
}

/// `/usr/bin/chromedriver`, or `HEALTH_CHROMEDRIVER`.
pub fn chromedriver_binary() -> PathBuf {
    tool(
        "HEALTH_CHROMEDRIVER",
        "/usr/bin/chromedriver",
        "chromium-driver",
    )
}

fn tool(env: &str, default: &str, package: &str) -> PathBuf {
    let path = std::env::var_os(env).map_or_else(|| PathBuf::from(default), PathBuf::from);
    assert!(
        path.is_file(),
        "{} not found: install Debian package {package} (tests/run.sh does) or set {env}",
        path.display()
    );
    path
}

/// Where tests write screenshots: `HEALTH_SCREENSHOT_DIR` if set (so CI or a developer keeps
/// them), else `fallback` (the test's tempdir). The directory is created if missing.
pub fn screenshot_dir(fallback: &Path) -> PathBuf {
    let dir =
        std::env::var_os("HEALTH_SCREENSHOT_DIR").map_or_else(|| fallback.into(), PathBuf::from);
    std::fs::create_dir_all(&dir)
        .unwrap_or_else(|e| panic!("create the screenshot directory {}: {e}", dir.display()));
    dir
}

/// One headless Chromium driven through chromedriver; see the module comment.
pub struct Browser {
    /// chromedriver's `127.0.0.1:port`.
    addr: String,
    session: String,
    driver: Proc,
    /// Chromium's user-data-dir and chromedriver's log.
    dir: tempfile::TempDir,
}

/// An error reply of the WebDriver server: its `error` code and `message`.
#[derive(Debug)]
struct WdError {
    error: String,
    message: String,
}

impl Browser {
    /// WebDriver code points of special keys, for [`Browser::press_key`] and
    /// [`Browser::send_keys`].
    pub const KEY_ENTER: &'static str = "\u{E007}";
    pub const KEY_TAB: &'static str = "\u{E004}";
    pub const KEY_ESCAPE: &'static str = "\u{E00C}";

    /// Starts chromedriver and a headless Chromium whose viewport (and so screenshots, at
    /// device scale 1) is `width` x `height` pixels.
    pub fn start(width: u32, height: u32) -> Browser {
        let chromium = chromium_binary();
        let dir = tempfile::tempdir().expect("tempdir for the browser");
        let log_path = dir.path().join("chromedriver.log");
        let log = std::fs::File::create(&log_path).expect("create the chromedriver log");
        let log_err = log.try_clone().expect("clone the chromedriver log handle");
        let port = free_port();
        let child = Command::new(chromedriver_binary())
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            // Its own group: Drop kills chromedriver and every Chromium process it started.
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("start chromedriver: {e}"));
        let mut driver = Proc {
            child,
            name: "chromedriver",
        };
        let addr = format!("127.0.0.1:{port}");
        wait_driver_ready(&mut driver, &addr, &log_path);

        let profile = dir.path().join("profile");
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "pageLoadStrategy": "normal",
            "timeouts": {"pageLoad": 30_000, "script": 30_000, "implicit": 0},
            "goog:chromeOptions": {
                "binary": chromium.to_string_lossy(),
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    format!("--window-size={width},{height}"),
                    // Screenshots in CSS pixels, whatever the host's display says.
                    "--force-device-scale-factor=1",
                    format!("--user-data-dir={}", profile.display()),
                    "--no-first-run",
                    "--no-default-browser-check",
                    "--lang=en-US",
                ],
            },
        }}});
        let reply = request(&addr, "POST", "/session", Some(&caps)).unwrap_or_else(|e| {
            // Whatever of Chromium started goes with chromedriver's group.
            let _ = killpg(driver.pid(), Signal::SIGKILL);
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            panic!(
                "WebDriver new session (chromium {}) failed: {}: {}\nchromedriver log:\n{}",
                chromium.display(),
                e.error,
                e.message,
                tail(&log, 3000)
            )
        });
        let session = reply["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("WebDriver new session: no sessionId in {reply}"))
            .to_string();
        let browser = Browser {
            addr,
            session,
            driver,
            dir,
        };
        browser.set_viewport_size(width, height);
        browser
    }

    /// Navigates to `url` and returns once it has loaded (the session's page-load timeout,
    /// 30 s, bounds it).
    pub fn goto(&self, url: &str) {
        self.cmd(
            &format!("navigate to {url}"),
            "POST",
            "/url",
            json!({ "url": url }),
        );
    }

    /// The URL of the current page.
    pub fn url(&self) -> String {
        let url = self.cmd("get current URL", "GET", "/url", Value::Null);
        url.as_str().unwrap_or_default().to_string()
    }

    /// Runs `script` in the page as the body of a function (W3C Execute Script: it sees
    /// `arguments[i]` and gives back what it `return`s, as JSON) and returns the result.
    pub fn execute(&self, script: &str, args: Vec<Value>) -> Value {
        self.cmd(
            &format!("execute script `{}`", head(script, 200)),
            "POST",
            "/execute/sync",
            json!({ "script": script, "args": args }),
        )
    }

    /// Polls `predicate_script` (a function body for [`Browser::execute`], such as
    /// `return document.title === 'x'`) every 50 ms until it returns a truthy value (not null,
    /// false, 0, "" or NaN), and returns that value. A script that throws counts as not yet
    /// (the page may still be loading). After `limit` the test fails naming `what`, with the
    /// last value, the current URL and the text the page shows.
    pub fn wait_js(&self, what: &str, limit: Duration, predicate_script: &str) -> Value {
        let t0 = Instant::now();
        loop {
            let last = match self.try_cmd(
                "POST",
                "/execute/sync",
                json!({ "script": predicate_script, "args": [] }),
            ) {
                Ok(value) if truthy(&value) => return value,
                Ok(value) => value.to_string(),
                Err(e) if e.error == "javascript error" => format!("script threw: {}", e.message),
                Err(e) => panic!(
                    "WebDriver execute script (waiting for {what}) failed: {}: {}",
                    e.error, e.message
                ),
            };
            if t0.elapsed() >= limit {
                let url = self.try_cmd("GET", "/url", Value::Null).map_or_else(
                    |e| format!("(unreadable: {}: {})", e.error, e.message),
                    |url| url.as_str().unwrap_or_default().to_string(),
                );
                let body = self.page_text();
                panic!(
                    "timed out after {limit:?} waiting for {what}\nlast value: {}\nURL: {url}\npage text:\n{}",
                    tail(&last, 1000),
                    head(&body, BODY_TEXT_SHOWN)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The text the page shows (`document.body.innerText`), or why it cannot be read; for
    /// failure messages.
    pub fn page_text(&self) -> String {
        let script = "return document.body ? document.body.innerText : '(no body)';";
        match self.try_cmd(
            "POST",
            "/execute/sync",
            json!({ "script": script, "args": [] }),
        ) {
            Ok(Value::String(text)) => text,
            Ok(other) => format!("(unexpected: {other})"),
            Err(e) => format!("(unreadable: {}: {})", e.error, e.message),
        }
    }

    /// The rendered text (`innerText`) of the first element matching `css`; the test fails if
    /// none does.
    pub fn text(&self, css: &str) -> String {
        let value = self.execute(
            "const e = document.querySelector(arguments[0]); return e === null ? null : e.innerText;",
            vec![json!(css)],
        );
        match value {
            Value::String(text) => text,
            _ => panic!("no element matches `{css}` on {}", self.url()),
        }
    }

    /// Clicks (real pointer events, at its centre) the first element matching `css`.
    pub fn click(&self, css: &str) {
        let id = self.find(css);
        self.cmd(
            &format!("click `{css}`"),
            "POST",
            &format!("/element/{id}/click"),
            json!({}),
        );
    }

    /// Types `text` into the first element matching `css` (W3C Element Send Keys: it is
    /// focused first; special keys such as [`Browser::KEY_ENTER`] may be part of `text`).
    pub fn send_keys(&self, css: &str, text: &str) {
        let id = self.find(css);
        let what = format!("send keys to `{css}`");
        self.cmd(
            &what,
            "POST",
            &format!("/element/{id}/value"),
            json!({ "text": text }),
        );
    }

    /// Presses and releases `key` (one character or a `KEY_*` constant) on whatever has the
    /// focus, as a real key event (W3C Perform Actions).
    pub fn press_key(&self, key: &str) {
        let actions = json!({"actions": [{"type": "key", "id": "keyboard", "actions": [
            {"type": "keyDown", "value": key},
            {"type": "keyUp", "value": key},
        ]}]});
        self.cmd(&format!("press key {key:?}"), "POST", "/actions", actions);
    }

    /// Resizes the page's viewport, and so later screenshots, to `width` x `height` pixels:
    /// the window is sized, then grown by what its (emulated) frame takes from the viewport.
    pub fn set_viewport_size(&self, width: u32, height: u32) {
        self.set_window_size(width, height);
        let inner = self.execute("return [window.innerWidth, window.innerHeight];", vec![]);
        let inner = |i: usize| inner[i].as_u64().unwrap_or(0) as u32;
        let (inner_w, inner_h) = (inner(0), inner(1));
        if (inner_w, inner_h) != (width, height) {
            let frame_w = width.saturating_sub(inner_w);
            let frame_h = height.saturating_sub(inner_h);
            self.set_window_size(width + frame_w, height + frame_h);
        }
    }

    /// Resizes the whole window (frame included: headless Chromium emulates one, so the
    /// viewport is smaller; see [`Browser::set_viewport_size`]) to `width` x `height` pixels.
    pub fn set_window_size(&self, width: u32, height: u32) {
        let rect = json!({ "width": width, "height": height });
        self.cmd(
            &format!("set window size {width}x{height}"),
            "POST",
            "/window/rect",
            rect,
        );
    }

    /// Screenshots the viewport (W3C Take Screenshot), writes the PNG to `path` and returns it
    /// decoded.
    pub fn screenshot(&self, path: &Path) -> Screenshot {
        let value = self.cmd("take screenshot", "GET", "/screenshot", Value::Null);
        let b64 = value.as_str().unwrap_or_else(|| {
            panic!(
                "WebDriver take screenshot: expected a base64 string, got {}",
                tail(&value.to_string(), 200)
            )
        });
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap_or_else(|e| panic!("WebDriver take screenshot: invalid base64: {e}"));
        std::fs::write(path, &bytes)
            .unwrap_or_else(|e| panic!("write the screenshot {}: {e}", path.display()));
        Screenshot::decode(&bytes, path)
    }

    /// chromedriver's log so far (it names what Chromium said when a session fails).
    pub fn driver_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("chromedriver.log")).unwrap_or_default()
    }

    /// The WebDriver reference of the first element matching `css`; the test fails if none.
    fn find(&self, css: &str) -> String {
        let what = format!("find element `{css}`");
        let value = self.cmd(
            &what,
            "POST",
            "/element",
            json!({"using": "css selector", "value": css}),
        );
        value[ELEMENT_KEY]
            .as_str()
            .unwrap_or_else(|| panic!("WebDriver {what}: no element reference in {value}"))
            .to_string()
    }

    /// A session command; an error reply fails the test naming `what` and the message.
    fn cmd(&self, what: &str, method: &str, path: &str, body: Value) -> Value {
        self.try_cmd(method, path, body)
            .unwrap_or_else(|e| panic!("WebDriver {what} failed: {}: {}", e.error, e.message))
    }

    fn try_cmd(&self, method: &str, path: &str, body: Value) -> Result<Value, WdError> {
        let path = format!("/session/{}{path}", self.session);
        let body = (method == "POST").then_some(&body);
        request(&self.addr, method, &path, body)
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ending the session makes chromedriver close Chromium cleanly; the group kill then
        // ends chromedriver and anything of Chromium's that is left, even if that failed.
        let _ = request(
            &self.addr,
            "DELETE",
            &format!("/session/{}", self.session),
            None,
        );
        let _ = killpg(self.driver.pid(), Signal::SIGKILL);
    }
}

/// Waits (bounded) for chromedriver's `/status` to say ready; fails with its log if it exits.
fn wait_driver_ready(driver: &mut Proc, addr: &str, log_path: &Path) {
    let t0 = Instant::now();
    loop {
        if let Ok(status) = request(addr, "GET", "/status", None) {
            if status["ready"] == json!(true) {
                return;
            }
        }
        let exited = driver.child.try_wait().ok().flatten();
        if exited.is_some() || t0.elapsed() > Duration::from_secs(20) {
            let log = std::fs::read_to_string(log_path).unwrap_or_default();
            panic!(
                "chromedriver on {addr} not ready after {:?} (exit: {exited:?}); its log:\n{}",
                t0.elapsed(),
                tail(&log, 3000)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One HTTP/1.1 request to the WebDriver server; the reply's `value`, or its error.
/// Chromedriver keeps the connection open despite `Connection: close`, so the body is read by
/// its Content-Length.
fn request(addr: &str, method: &str, path: &str, body: Option<&Value>) -> Result<Value, WdError> {
    let transport = |message: String| WdError {
        error: "transport".into(),
        message: format!("{method} {path} to chromedriver on {addr}: {message}"),
    };
    let mut stream = TcpStream::connect(addr).map_err(|e| transport(format!("connect: {e}")))?;
    let _ = stream.set_read_timeout(Some(COMMAND_TIMEOUT));
    let _ = stream.set_write_timeout(Some(COMMAND_TIMEOUT));
    let body = body.map(Value::to_string).unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream
        .write_all(head.as_bytes())
        .and_then(|()| stream.write_all(body.as_bytes()))
        .map_err(|e| transport(format!("send: {e}")))?;
    let (status, reply) = read_reply(&mut stream).map_err(transport)?;
    let json: Value = serde_json::from_slice(&reply).map_err(|e| {
        transport(format!(
            "HTTP {status}, body not JSON ({e}): {}",
            tail(&String::from_utf8_lossy(&reply), 300)
        ))
    })?;
    let value = json.get("value").cloned().unwrap_or(Value::Null);
    match value.get("error").and_then(Value::as_str) {
        Some(error) if status >= 400 => Err(WdError {
            error: error.to_string(),
            message: value["message"].as_str().unwrap_or_default().to_string(),
        }),
        _ if status >= 400 => Err(transport(format!("HTTP {status}: {json}"))),
        _ => Ok(value),
    }
}

/// Reads an HTTP/1.1 reply with a Content-Length: (status, body).
fn read_reply(stream: &mut TcpStream) -> Result<(u16, Vec<u8>), String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let header_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut chunk).map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err(format!(
                "connection closed before the headers ({} bytes)",
                buf.len()
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..header_end]).to_string();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no HTTP status in {:?}", head.lines().next()))?;
    let length = head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse::<usize>().ok())?
    });
    let mut body = buf.split_off(header_end);
    match length {
        Some(length) => {
            while body.len() < length {
                let n = stream
                    .read(&mut chunk)
                    .map_err(|e| format!("read body: {e}"))?;
                if n == 0 {
                    return Err(format!("body cut at {} of {length} bytes", body.len()));
                }
                body.extend_from_slice(&chunk[..n]);
            }
            body.truncate(length);
        }
        None => {
            stream
                .read_to_end(&mut body)
                .map_err(|e| format!("read body: {e}"))?;
        }
    }
    Ok((status, body))
}

/// JavaScript truthiness of a JSON result (objects and arrays are truthy, even empty).
fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0 && !f.is_nan()),
        Value::String(s) => !s.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
    }
}

/// The first `max` characters of `s`, marked when cut.
fn head(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}… ({} more bytes)", &s[..i], s.len() - i),
        None => s.to_string(),
    }
}

/// The last `max` characters of `s`, marked when cut.
fn tail(s: &str, max: usize) -> String {
    let count = s.chars().count();
    if count <= max {
        return s.to_string();
    }
    let start = s.char_indices().nth(count - max).map_or(0, |(i, _)| i);
    format!("…{}", &s[start..])
}

/// A decoded screenshot, for checks that the page really rendered something.
pub struct Screenshot {
    /// Where the PNG was written.
    pub path: PathBuf,
    pub width: u32,
    pub height: u32,
    /// RGB, row by row (alpha dropped: screenshots are opaque).
    rgb: Vec<[u8; 3]>,
}

/// The smallest screenshot taken as a real page (a collapsed or failed viewport is smaller).
pub const MIN_SCREENSHOT_SIDE: u32 = 100;
/// At least this many distinct colours: text alone, anti-aliased, gives dozens.
pub const MIN_DISTINCT_COLOURS: usize = 8;
/// At least this share of pixels (per mille) must differ from the most common (background)
/// colour: a heading and a few table rows cover several percent of a window.
pub const MIN_NON_BACKGROUND_PER_MILLE: u64 = 5;

impl Screenshot {
    /// Reads and decodes a PNG file.
    pub fn load(path: &Path) -> Screenshot {
        let bytes = std::fs::read(path)
            .unwrap_or_else(|e| panic!("read the screenshot {}: {e}", path.display()));
        Screenshot::decode(&bytes, path)
    }

    /// Decodes PNG `bytes` (whatever their colour type or depth) into RGB.
    pub fn decode(bytes: &[u8], path: &Path) -> Screenshot {
        let fail =
            |e: png::DecodingError| format!("decode the screenshot PNG {}: {e}", path.display());
        let mut decoder = png::Decoder::new(std::io::Cursor::new(bytes));
        decoder.set_transformations(png::Transformations::normalize_to_color8());
        let mut reader = decoder
            .read_info()
            .unwrap_or_else(|e| panic!("{}", fail(e)));
        let size = reader
            .output_buffer_size()
            .unwrap_or_else(|| panic!("screenshot {}: image too large", path.display()));
        let mut buf = vec![0u8; size];
        let info = reader
            .next_frame(&mut buf)
            .unwrap_or_else(|e| panic!("{}", fail(e)));
        let channels = info.color_type.samples();
        let rgb = buf[..info.buffer_size()]
            .chunks_exact(info.line_size)
            .flat_map(|line| line[..info.width as usize * channels].chunks_exact(channels))
            .map(|px| match channels {
                1 | 2 => [px[0], px[0], px[0]],
                _ => [px[0], px[1], px[2]],
            })
            .collect();
        Screenshot {
            path: path.to_path_buf(),
            width: info.width,
            height: info.height,
            rgb,
        }
    }

    /// How many distinct colours the image has, and how many pixels differ from the most
    /// common one.
    pub fn colour_stats(&self) -> (usize, u64) {
        let mut counts: HashMap<[u8; 3], u64> = HashMap::new();
        for px in &self.rgb {
            *counts.entry(*px).or_default() += 1;
        }
        let background = counts.values().copied().max().unwrap_or(0);
        (counts.len(), self.rgb.len() as u64 - background)
    }

    /// Why the image looks blank (too small, one flat colour, or nearly so), or None if it
    /// shows something: see [`MIN_SCREENSHOT_SIDE`], [`MIN_DISTINCT_COLOURS`] and
    /// [`MIN_NON_BACKGROUND_PER_MILLE`].
    pub fn blank_reason(&self) -> Option<String> {
        let name = self.path.display();
        if self.width < MIN_SCREENSHOT_SIDE || self.height < MIN_SCREENSHOT_SIDE {
            return Some(format!(
                "screenshot {name} is {}x{}, expected at least {MIN_SCREENSHOT_SIDE}x{MIN_SCREENSHOT_SIDE}",
                self.width, self.height
            ));
        }
        let (distinct, off_background) = self.colour_stats();
        let total = self.rgb.len() as u64;
        if distinct < MIN_DISTINCT_COLOURS {
            return Some(format!(
                "screenshot {name} has {distinct} distinct colour(s), expected at least {MIN_DISTINCT_COLOURS}"
            ));
        }
        if off_background * 1000 < total * MIN_NON_BACKGROUND_PER_MILLE {
            return Some(format!(
                "screenshot {name}: only {off_background} of {total} pixels differ from the background, \
                 expected at least {MIN_NON_BACKGROUND_PER_MILLE}‰"
            ));
        }
        None
    }

    /// Fails the test if the image looks blank (see [`Screenshot::blank_reason`]).
    pub fn assert_not_blank(&self) {
        if let Some(reason) = self.blank_reason() {
            panic!("{reason}");
        }
    }
}
