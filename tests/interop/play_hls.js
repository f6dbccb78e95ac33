// Plays an HLS master playlist with hls.js in headless Chromium (Debian's,
// driven by puppeteer-core) and prints what happened as one JSON line:
// the renditions hls.js listed, how far playback got, and any fatal error.
//   node play_hls.js CHROMIUM MASTER_URL [SECONDS]
const path = require("path");
const puppeteer = require("puppeteer-core");

const [chromium, url, seconds = "3"] = process.argv.slice(2);
const hlsPath = path.join(__dirname, "node_modules", "hls.js", "dist", "hls.min.js");

(async () => {
  const browser = await puppeteer.launch({
    executablePath: chromium,
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--autoplay-policy=no-user-gesture-required", "--mute-audio"],
  });
  try {
    const page = await browser.newPage();
    await page.setContent("<video id=v muted playsinline></video>");
    await page.addScriptTag({ path: hlsPath });
    const result = await page.evaluate(
      (src, want) =>
        new Promise((resolve) => {
          const video = document.getElementById("v");
          const hls = new Hls();
          const finish = (error) =>
            resolve({
              supported: Hls.isSupported(),
              levels: hls.levels.map((l) => l.height),
              currentTime: video.currentTime,
              error,
            });
          hls.on(Hls.Events.ERROR, (_, data) => data.fatal && finish(`${data.type}: ${data.details}`));
          hls.on(Hls.Events.MANIFEST_PARSED, () => video.play().catch((e) => finish(String(e))));
          video.addEventListener("timeupdate", () => video.currentTime >= want && finish(null));
          setTimeout(() => finish("timed out"), 30000);
          hls.loadSource(src);
          hls.attachMedia(video);
        }),
      url,
      Number(seconds),
    );
    console.log(JSON.stringify(result));
  } finally {
    await browser.close();
  }
})().catch((e) => {
  console.error(e);
  process.exit(1);
});
