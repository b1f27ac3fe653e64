// Open a trace-event file in speedscope (a trace viewer that runs in the browser), in
// Debian's headless Chromium, and screenshot it:
//   node render_trace.js PLAYWRIGHT_CORE_DIR URL SCREENSHOT
// Prints {"errors": [...the page's...], "text": ...what the page shows...} as JSON.
const { chromium } = require(process.argv[2]);
(async () => {
  const browser = await chromium.launch({
    executablePath: '/usr/bin/chromium', headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking',
           '--disable-component-update', '--no-first-run', '--disable-sync'] });
  const page = await browser.newPage({ viewport: { width: 1400, height: 650 } });
  const errors = [];
  page.on('pageerror', e => errors.push(String(e)));
  await page.goto(process.argv[3]);
  await page.waitForFunction(() => /\(pid \d+/.test(document.body.innerText),
                             null, { timeout: 30000 });
  await page.screenshot({ path: process.argv[4] });
  const text = await page.evaluate(() => document.body.innerText);
  console.log(JSON.stringify({ errors, text }));
  await browser.close();
})().catch(e => { console.error(e); process.exit(1); });
