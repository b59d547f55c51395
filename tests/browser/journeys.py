#!/usr/bin/env python3
"""The console's journeys in a real browser (Debian's chromium, headless, through selenium and
chromium-driver), each asserting on what the page shows.

Run by tests/it/console_browser.rs, which starts Herald, fills it with mail (a relay's 550, a
bounce report), adds the operators, and passes what it made in the environment:

  HERALD_BASE, HERALD_PROJECT, HERALD_PASSWORD, HERALD_ADMIN, HERALD_VIEWER,
  HERALD_BOUNCED (an email the relay refused with 550), HERALD_REPORTED (an email a DSN
  bounced), HERALD_RECEIVER (a webhook receiver's URL), HERALD_DOMAIN (a sending domain
  whose DKIM record has the wrong value), HERALD_HOSTILE (an email whose HTML has a script, a
  remote image and a form aimed at HERALD_ELSEWHERE, another host), HERALD_SHOTS (the
  screenshots).

Every page is also checked for: console errors, requests to any host but Herald's, and
axe-core's accessibility rules (no serious or critical violation), at 1280 px and 390 px wide.
Prints one line per journey; exits non-zero on the first failure, saying where.
"""

import json
import os
import pathlib
import sys
import urllib.parse

from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

BASE = os.environ["HERALD_BASE"]
PROJECT = os.environ["HERALD_PROJECT"]
PASSWORD = os.environ["HERALD_PASSWORD"]
ADMIN = os.environ["HERALD_ADMIN"]
VIEWER = os.environ["HERALD_VIEWER"]
BOUNCED = os.environ["HERALD_BOUNCED"]
REPORTED = os.environ["HERALD_REPORTED"]
RECEIVER = os.environ["HERALD_RECEIVER"]
DOMAIN = os.environ["HERALD_DOMAIN"]
HOSTILE = os.environ["HERALD_HOSTILE"]
ELSEWHERE = os.environ["HERALD_ELSEWHERE"]
SHOTS = pathlib.Path(os.environ["HERALD_SHOTS"])
AXE = (pathlib.Path(__file__).parent / "axe.min.js").read_text()
HOST = urllib.parse.urlsplit(BASE).netloc
WIDTHS = {"wide": (1280, 900), "narrow": (390, 844)}


def browser(javascript=True):
    o = webdriver.ChromeOptions()
    if not javascript:
        o.add_experimental_option("prefs", {"profile.managed_default_content_settings.javascript": 2})
    o.binary_location = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--no-first-run", "--disable-extensions", "--disable-background-networking",
              "--disable-component-update", "--disable-default-apps", "--disable-sync"):
        o.add_argument(a)
    o.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    service = Service(os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver"))
    d = webdriver.Chrome(service=service, options=o)
    d.set_page_load_timeout(30)
    d.set_script_timeout(60)
    return d


class Failed(Exception):
    pass


def check(cond, what):
    if not cond:
        raise Failed(what)


def wait_url(d, fragment, what):
    """Waits (up to 10 s) for a navigation an action started to reach its page."""
    try:
        WebDriverWait(d, 10).until(EC.url_contains(fragment))
    except Exception:
        raise Failed(f"{what}: never reached a URL with {fragment!r} ({d.current_url})")
    WebDriverWait(d, 10).until(lambda d: d.execute_script("return document.readyState") == "complete")


def wait_text(d, text, what):
    """Waits (up to 10 s) for the page to show a text after an action."""
    try:
        WebDriverWait(d, 10).until(lambda d: text in page_text(d))
    except Exception:
        raise Failed(f"{what}: the page never said {text!r}")


def page_text(d):
    # Read in one script: an element looked up first could go stale under a navigation.
    return d.execute_script("return document.body ? document.body.innerText : ''")


def requests_seen(d):
    """Every URL the browser asked for since the last call."""
    urls = []
    for entry in d.get_log("performance"):
        msg = json.loads(entry["message"])["message"]
        if msg.get("method") == "Network.requestWillBeSent":
            urls.append(msg["params"]["request"]["url"])
    return urls


def audit_page(d, name):
    """The checks every page gets: no console error, no request elsewhere, axe, at both
    widths, with a screenshot of each."""
    errors = [e for e in d.get_log("browser") if e["level"] == "SEVERE"]
    check(not errors, f"{name}: console errors {errors}")
    for url in requests_seen(d):
        parts = urllib.parse.urlsplit(url)
        check(parts.scheme in ("data", "about") or parts.netloc == HOST,
              f"{name}: a request to another host: {url}")
    for label, (w, h) in WIDTHS.items():
        d.set_window_size(w, h)
        d.execute_script(AXE + "\nreturn true;")
        result = d.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "axe.run(document, {resultTypes: ['violations']}).then(r => done(r.violations))"
            ".catch(e => done([{id: 'axe-error', impact: 'critical', help: String(e), nodes: []}]));")
        bad = [f"{v['id']} ({v['impact']}): {v['help']} at "
               f"{[n.get('target') for n in v.get('nodes', [])][:3]}"
               for v in result if v.get("impact") in ("serious", "critical")]
        check(not bad, f"{name} at {w}px: accessibility: {bad}")
        # Nothing may be wider than the window (no sideways scrolling of the page itself).
        overflow = d.execute_script(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth")
        if overflow > 1:
            wide = d.execute_script(
                "const w = document.documentElement.clientWidth; return [...document.querySelectorAll('body *')]"
                ".filter(e => (e.getBoundingClientRect().right > w + 1 || e.scrollWidth > e.clientWidth + 1 && getComputedStyle(e).overflowX === 'visible') && !e.closest('.scroll'))"
                ".slice(0, 5).map(e => e.tagName + '.' + e.className + ' ' + Math.round(e.getBoundingClientRect().right))")
            raise Failed(f"{name} at {w}px: the page is {overflow}px wider than the window: {wide}")
        d.save_screenshot(str(SHOTS / f"{name}-{label}.png"))
    d.set_window_size(*WIDTHS["wide"])


def go(d, path, name):
    d.get(BASE + path)
    audit_page(d, name)


def sign_in(d, email):
    d.get(BASE + "/")
    check("/sign-in" in d.current_url, "not signed in: to the sign-in page")
    audit_page(d, "sign-in")
    d.find_element(By.ID, "email").send_keys(email)
    d.find_element(By.ID, "password").send_keys(PASSWORD + Keys.ENTER)
    wait_url(d, f"/projects/{PROJECT}", "after signing in: the overview")


def journey_sign_in_and_overview(d):
    d.get(BASE + "/sign-in")
    d.find_element(By.ID, "email").send_keys(ADMIN)
    d.find_element(By.ID, "password").send_keys("not the password" + Keys.ENTER)
    wait_text(d, "do not match an operator", "a wrong password is said")
    # The browser logs the refused sign-in's 401 as an error: expected here, and only that.
    logged = [e for e in d.get_log("browser") if e["level"] == "SEVERE"]
    check(all("401" in e["message"] for e in logged), f"only the 401 was logged: {logged}")
    sign_in(d, ADMIN)
    audit_page(d, "overview")
    text = page_text(d)
    check("Overview" in text and "Bounce rate" in text, "the overview's figures")
    sent = d.find_element(By.XPATH, "//li[span[text()='Sent']]/strong").text
    check(int(sent) >= 3, f"sent counted ({sent})")
    check(d.find_elements(By.CSS_SELECTOR, "svg.chart polyline.series-0"), "a chart")
    points = d.find_elements(By.CSS_SELECTOR, "svg.chart circle.series-1 title")
    check(any(": 0 bounced" not in p.get_attribute("textContent") for p in points),
          "the chart shows the bounces")
    return f"overview: sent {sent}, chart drawn"


def journey_find_an_email(d):
    go(d, f"/projects/{PROJECT}/emails", "emails")
    box = d.find_element(By.ID, "f-recipient")
    box.send_keys("zed@example.net" + Keys.ENTER)
    wait_url(d, "recipient=zed%40example.net", "the search is in the URL")
    audit_page(d, "emails-search")
    links = d.find_elements(By.CSS_SELECTOR, "table.list a")
    check(len(links) == 1, f"one email to zed ({len(links)})")
    links[0].click()
    wait_url(d, f"/emails/{BOUNCED}", "the email's page")
    audit_page(d, "email-bounced")
    text = page_text(d)
    check("550" in text and "5.1.1" in text and "User unknown" in text,
          "the relay's 550 reply is on the page")
    check("bounced" in text, "the recipient's status")
    return "found zed@example.net's email; the relay's 550 5.1.1 is shown"


def journey_bounce_report(d):
    go(d, f"/projects/{PROJECT}/emails/{REPORTED}", "email-reported")
    section = d.find_element(By.XPATH, "//section[h2[text()='Bounce and complaint reports']]")
    text = section.text
    check("dsn" in text and "bounced" in text, f"the report that bounced it: {text}")
    check("mailbox full" in text or "5.2.2" in text, "what the report said")
    link = section.find_element(By.LINK_TEXT, "the report as received")
    check(link.get_attribute("download") is not None, "the raw report downloads")
    timeline = d.find_element(By.XPATH, "//section[h2[text()='Timeline']]").text
    check("sent" in timeline and "bounced" in timeline, "the timeline: sent, then bounced")
    return "the sent email's DSN is shown with its diagnostic and raw download"


def journey_suppressions(d):
    go(d, f"/projects/{PROJECT}/suppressions", "suppressions")
    d.find_element(By.ID, "a-email").send_keys("journey@example.com")
    d.find_element(By.XPATH, "//form[.//input[@id='a-email']]//button").click()
    wait_text(d, "journey@example.com is suppressed.", "added, and said so")
    audit_page(d, "suppressions-added")
    row = d.find_element(By.XPATH, "//tr[td[text()='journey@example.com']]")
    row.find_element(By.NAME, "why").send_keys("a journey test")
    row.find_element(By.XPATH, ".//button[text()='Remove']").click()
    wait_text(d, "journey@example.com may be sent to again.", "removed, and said so")
    check(not d.find_elements(By.XPATH, "//tr[td[text()='journey@example.com']]"), "gone")
    go(d, f"/projects/{PROJECT}/audit", "audit")
    text = page_text(d)
    check("suppression.add" in text and "suppression.remove" in text and "a journey test" in text,
          "the audit log has both changes, with the reason")
    return "added and removed journey@example.com; both in the audit log"


def journey_webhook(d):
    go(d, f"/projects/{PROJECT}/webhooks", "webhooks")
    d.find_element(By.ID, "w-url").send_keys(RECEIVER)
    d.find_element(By.XPATH, "//input[@name='events'][@value='*']").click()
    d.find_element(By.XPATH, "//button[text()='Add the endpoint']").click()
    wait_text(d, "Attempt log", "the new endpoint's page")
    check(RECEIVER in d.find_element(By.TAG_NAME, "h1").text, "the endpoint's URL")
    audit_page(d, "webhook")
    d.find_element(By.XPATH, "//button[text()='Show the signing secret']").click()
    wait_text(d, "Signing secret", "the secret on demand")
    secret = d.find_element(By.ID, "secret").text
    check(secret.startswith("whsec_"), f"a Standard Webhooks secret ({secret[:6]}…)")
    check(secret not in d.current_url, "the secret is not in the URL")
    d.get(BASE + f"/projects/{PROJECT}/webhooks")
    d.find_element(By.PARTIAL_LINK_TEXT, RECEIVER).click()
    d.find_element(By.XPATH, "//button[text()='Send a test event']").click()
    wait_text(d, "A webhook.test event is on its way.", "the test event")
    # The dispatcher sends it within moments; the log shows the receiver's 200.
    try:
        WebDriverWait(d, 15, poll_frequency=0.25).until(
            lambda d: (d.refresh() or True) and "succeeded 200" in page_text(d))
    except Exception:
        raise Failed("the test event's delivery never appeared in the attempt log")
    audit_page(d, "webhook-attempts")
    return "created an endpoint, saw its secret, sent a test event; the log shows 200"


def journey_domain(d):
    go(d, f"/projects/{PROJECT}/domains", "domains")
    d.find_element(By.LINK_TEXT, DOMAIN).click()
    wait_text(d, "Records to publish", "the domain's page")
    audit_page(d, "domain")
    dkim = d.find_element(By.XPATH, "//section[@aria-label='DKIM record']").text
    check("failed" in dkim and "INVALID_VALUE" in dkim and "not the one to publish" in dkim,
          f"the failing DKIM record and why: {dkim}")
    value = d.find_element(By.CSS_SELECTOR, "section[aria-label='DKIM record'] code.record-value").text
    check(value.startswith("v=DKIM1;"), "the value to publish")
    check(d.find_elements(By.XPATH, "//section[@aria-label='DKIM record']//button[text()='Copy']"),
          "a copy button beside the value")
    d.find_element(By.XPATH, "//button[text()='Verify now']").click()
    wait_text(d, "Herald is checking the records now", "verify now")
    return "the domain's DKIM record fails with INVALID_VALUE, explained; verify now asked"


def journey_api_key(d):
    go(d, f"/projects/{PROJECT}/keys", "keys")
    d.find_element(By.ID, "k-name").send_keys("journey key")
    d.find_element(By.XPATH, "//button[text()='Create']").click()
    wait_text(d, "shown this once", "the new token")
    token = d.find_element(By.ID, "token").text
    check(token.startswith("hk_"), "a token")
    check(token not in d.current_url, "the token is not in the URL")
    audit_page(d, "keys-created")
    d.get(BASE + f"/projects/{PROJECT}/keys")
    check(token not in page_text(d), "the token is never shown again")
    d.find_element(By.XPATH, "//button[@aria-label='Revoke journey key']").click()
    wait_text(d, "The key is revoked.", "revoked")
    check("journey key" not in page_text(d), "gone from the live keys")
    return "created a key (token shown once), revoked it"


def journey_projects(d):
    go(d, f"/projects/{PROJECT}/projects", "projects")
    d.find_element(By.ID, "p-name").send_keys("second shop")
    d.find_element(By.XPATH, "//form[.//input[@id='p-name']]//button").click()
    try:
        WebDriverWait(d, 10).until(lambda d: f"/projects/{PROJECT}" not in d.current_url)
    except Exception:
        raise Failed("never reached the new project's overview")
    wait_text(d, "Overview", "the new project's overview")
    switch = d.find_element(By.ID, "project-switch")
    names = [o.text for o in switch.find_elements(By.TAG_NAME, "option")]
    check("second shop" in names and "alpha" in names, f"the switcher lists both: {names}")
    # Switching works without JavaScript: a form and its button.
    for o in switch.find_elements(By.TAG_NAME, "option"):
        if o.text == "alpha":
            o.click()
    d.find_element(By.XPATH, "//form[@action='/switch']//button").click()
    wait_url(d, f"/projects/{PROJECT}", "switched back to alpha")
    return "created a project, switched to it and back"


def journey_bounces(d):
    go(d, f"/projects/{PROJECT}/bounces?period=7d", "bounces")
    text = page_text(d)
    check("no_email" in text or "mailbox_full" in text, f"bounces by reason: {text[:400]}")
    check("example.net" in text and "example.org" in text, "bounces by recipient domain")
    return "bounces by reason and recipient domain"


def journey_hostile_html(d):
    """An email whose HTML tries to run a script and reach another host: the preview shows
    it, and nothing runs and nothing is asked of the other host."""
    d.get(BASE + f"/projects/{PROJECT}/emails/{HOSTILE}")
    check("<script>alert('subject')</script>" in page_text(d), "the subject is shown as text")
    check(d.title != "pwned", "nothing ran in the page")
    frame = d.find_element(By.CSS_SELECTOR, "iframe.preview")
    check(frame.get_attribute("sandbox") == "", "the frame is sandboxed, nothing allowed")
    d.switch_to.frame(frame)
    WebDriverWait(d, 10).until(lambda d: "Hello" in d.execute_script("return document.body ? document.body.innerText : ''"))
    ran = d.execute_script("return document.title")
    d.switch_to.default_content()
    check(ran != "pwned", "the script in the HTML did not run")
    other = urllib.parse.urlsplit(ELSEWHERE).netloc
    asked = [u for u in requests_seen(d) if urllib.parse.urlsplit(u).netloc == other]
    check(not asked, f"the preview asked another host: {asked}")
    # The only errors are the browser saying what it refused.
    logged = [e["message"] for e in d.get_log("browser") if e["level"] == "SEVERE"]
    check(all("sandboxed" in m or "Content Security Policy" in m or "Refused" in m for m in logged),
          f"errors other than refusals: {logged}")
    d.save_screenshot(str(SHOTS / "email-hostile-wide.png"))
    return "a script, a remote image and a form in an email's HTML: none ran or reached out"


def journey_javascript_off():
    """Reading works with JavaScript off: sign in, the overview's chart, a search, an email."""
    d = browser(javascript=False)
    try:
        d.get(BASE + "/sign-in")
        d.find_element(By.ID, "email").send_keys(ADMIN)
        d.find_element(By.ID, "password").send_keys(PASSWORD + Keys.ENTER)
        wait_url(d, f"/projects/{PROJECT}", "signed in without JavaScript")
        check(d.find_elements(By.CSS_SELECTOR, "svg.chart polyline"), "the chart is drawn")
        d.get(BASE + f"/projects/{PROJECT}/emails?recipient=zed%40example.net")
        d.find_element(By.CSS_SELECTOR, "table.list a").click()
        wait_url(d, f"/emails/{BOUNCED}", "the email")
        check("550" in page_text(d), "the email's reply")
        d.save_screenshot(str(SHOTS / "email-bounced-no-javascript.png"))
    finally:
        d.quit()
    return "signed in, read the overview, searched and opened an email with JavaScript off"


def journey_keyboard(d):
    d.get(BASE + f"/projects/{PROJECT}")
    body = d.find_element(By.TAG_NAME, "body")
    body.send_keys(Keys.TAB)
    first = d.switch_to.active_element
    check(first.text == "Skip to the content", f"the first stop is the skip link ({first.text})")
    # Tab on to the navigation's "Emails" and follow it with Enter.
    for _ in range(20):
        d.switch_to.active_element.send_keys(Keys.TAB)
        if d.switch_to.active_element.text == "Emails":
            break
    check(d.switch_to.active_element.text == "Emails", "Tab reaches the navigation")
    d.switch_to.active_element.send_keys(Keys.ENTER)
    wait_url(d, f"/projects/{PROJECT}/emails", "Enter follows the link")
    return "Tab reaches the skip link and the navigation; Enter follows"


def journey_sign_out(d):
    d.get(BASE + f"/projects/{PROJECT}")
    d.find_element(By.XPATH, "//button[text()='Sign out']").click()
    wait_url(d, "/sign-in", "signed out: the sign-in page")
    d.get(BASE + f"/projects/{PROJECT}/emails")
    check("/sign-in" in d.current_url, "the pages ask to sign in again")
    return "signed out; pages ask to sign in again"


def journey_viewer(d):
    sign_in(d, VIEWER)
    check("read only" in page_text(d), "the header says read only")
    go(d, f"/projects/{PROJECT}/suppressions", "viewer-suppressions")
    check(not d.find_elements(By.ID, "a-email"), "no form to add")
    check(not d.find_elements(By.XPATH, "//button[text()='Remove']"), "no Remove button")
    go(d, f"/projects/{PROJECT}/emails/{BOUNCED}", "viewer-email")
    check(not d.find_elements(By.XPATH, "//button[contains(text(),'Cancel')]"), "no Cancel")
    journey_sign_out(d)
    return "a viewer sees no form that changes anything"


def main():
    SHOTS.mkdir(parents=True, exist_ok=True)
    d = browser()
    try:
        for j in (journey_sign_in_and_overview, journey_find_an_email, journey_bounce_report,
                  journey_suppressions, journey_webhook, journey_domain, journey_api_key,
                  journey_projects, journey_bounces, journey_hostile_html, journey_keyboard, journey_sign_out, journey_viewer):
            requests_seen(d)  # start each journey's request log afresh
            try:
                print(f"ok {j.__name__}: {j(d)}", flush=True)
            except Failed as e:
                d.save_screenshot(str(SHOTS / f"failed-{j.__name__}.png"))
                print(f"FAILED {j.__name__}: {e} (at {d.current_url})", flush=True)
                return 1
        try:
            print(f"ok journey_javascript_off: {journey_javascript_off()}", flush=True)
        except Failed as e:
            print(f"FAILED journey_javascript_off: {e}", flush=True)
            return 1
    finally:
        d.quit()
    return 0


if __name__ == "__main__":
    sys.exit(main())
