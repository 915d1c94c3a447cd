using System.Diagnostics;
using Microsoft.Playwright;
using XrayVL.Tests.Support;

namespace XrayVL.Tests.Serving;

/// <summary>
/// The page in a real browser: Playwright drives Debian's Chromium (installed here with apt-get when missing).
/// A person's path: upload a sample X-ray, watch the report stream in, ask a follow-up, switch language, copy and
/// download, see boxes drawn — and a screenshot is saved under the test output folder (screenshots/xrayvl-page.png).
/// </summary>
public class BrowserTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    public static string ScreenshotPath => Path.Combine(AppContext.BaseDirectory, "screenshots", "xrayvl-page.png");

    [Fact]
    public async Task APersonUploadsAnXrayGetsAStreamedReportAndAsksAFollowUp()
    {
        string chromium = Chromium.Ensure();
        // The slower model (a few ms per token): on a loaded machine the tiny one writes a whole report before the browser
        // reads once, and the streaming this test watches for would arrive as one piece.
        await using var live = await LiveServer.StartAsync(o => o with { Model = ServingModel.Slow, DefaultMaxTokens = 40 });
        using var playwright = await Playwright.CreateAsync();
        await using var browser = await playwright.Chromium.LaunchAsync(new BrowserTypeLaunchOptions
        {
            ExecutablePath = chromium,
            Headless = true,
            Args =
            [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--disable-quic", "--no-first-run",
            ],
        });
        var context = await browser.NewContextAsync(new BrowserNewContextOptions
        {
            ViewportSize = new ViewportSize { Width = 1440, Height = 900 },
            Locale = "en-US",
            AcceptDownloads = true,
        });
        await context.GrantPermissionsAsync(["clipboard-read", "clipboard-write"], new BrowserContextGrantPermissionsOptions { Origin = live.Address.ToString().TrimEnd('/') });
        var page = await context.NewPageAsync();
        var pageErrors = new List<string>();
        page.PageError += (_, error) => pageErrors.Add(error);
        page.SetDefaultTimeout(30_000);

        await page.GotoAsync(live.Address.ToString());
        Assert.True(await page.Locator("#notice").IsVisibleAsync());
        Assert.Contains("not a medical device", await page.Locator("#notice").InnerTextAsync());
        await page.WaitForFunctionAsync("() => window.xrayvl.state.session !== null");

        // Upload a sample X-ray: the server renders the preview.
        string sample = ServingModel.SampleImages[0];
        await page.Locator("#file").SetInputFilesAsync(sample);
        await page.Locator("#viewer").WaitForAsync(new LocatorWaitForOptions { State = WaitForSelectorState.Visible });
        await page.WaitForFunctionAsync("() => !document.getElementById('report-button').disabled");
        Assert.True(await page.EvaluateAsync<bool>("() => document.getElementById('preview').naturalWidth > 100"));

        // Ask for the report and count how often its text changes while it streams in.
        await page.EvaluateAsync("""
            () => {
              window.reportUpdates = 0;
              new MutationObserver(() => window.reportUpdates++).observe(document.getElementById('report'), { childList: true, characterData: true, subtree: true });
            }
            """);
        await page.ClickAsync("#report-button");
        await page.WaitForFunctionAsync("() => document.getElementById('status').textContent.startsWith('Done')");
        string report = await page.Locator("#report").InnerTextAsync();
        Assert.False(string.IsNullOrWhiteSpace(report));
        Assert.True(await page.EvaluateAsync<int>("() => window.reportUpdates") > 3, "the report should arrive in several pieces");
        Assert.True(await page.Locator("#findings tbody tr").CountAsync() >= 1);
        string reportFromState = await page.EvaluateAsync<string>("() => window.xrayvl.state.report");
        Assert.Equal(reportFromState.Trim(), report.Trim());

        // A follow-up question in the chat.
        await page.FillAsync("#question", "Is there a pleural effusion?");
        await page.PressAsync("#question", "Enter");
        await page.WaitForFunctionAsync("() => document.querySelector('#messages li.assistant') && !document.querySelector('#messages li.streaming') && document.getElementById('status').textContent.startsWith('Done')");
        Assert.Equal("Is there a pleural effusion?", await page.Locator("#messages li.user").Last.InnerTextAsync());
        Assert.False(string.IsNullOrWhiteSpace(await page.Locator("#messages li.assistant").Last.InnerTextAsync()));

        // The server kept the chat's turn (question, answer); the report was written apart from the chat.
        string id = await page.EvaluateAsync<string>("() => window.xrayvl.state.session");
        var turns = System.Text.Json.Nodes.JsonNode.Parse(await live.Client.GetStringAsync($"/api/sessions/{id}", Ct))!["turns"]!.AsArray();
        Assert.Equal(2, turns.Count);

        // Copy and download the report.
        await page.ClickAsync("#copy");
        Assert.Equal(reportFromState, await page.EvaluateAsync<string>("() => navigator.clipboard.readText()"));
        var download = await page.RunAndWaitForDownloadAsync(() => page.ClickAsync("#download"));
        Assert.Equal("xrayvl-report.txt", download.SuggestedFilename);
        string saved = await File.ReadAllTextAsync(await download.PathAsync(), Ct);
        Assert.StartsWith(reportFromState, saved);
        Assert.Contains("not a medical device", saved);

        // Boxes on the 0–100 grid are drawn over the image (a grounding answer would carry them).
        double alpha = await page.EvaluateAsync<double>("""
            () => {
              window.xrayvl.drawBoxes([[20, 30, 60, 70]]);
              const c = document.getElementById('overlay');
              const edge = c.getContext('2d').getImageData(Math.round(c.width * 0.2), Math.round(c.height * 0.5), 1, 1).data;
              const outside = c.getContext('2d').getImageData(Math.round(c.width * 0.9), Math.round(c.height * 0.9), 1, 1).data;
              return outside[3] === 0 ? edge[3] : -1;
            }
            """);
        Assert.True(alpha > 0, "the box edge should be drawn and nothing outside it");

        await page.ScreenshotAsync(new PageScreenshotOptions { Path = ScreenshotPath, FullPage = true });
        Assert.True(new FileInfo(ScreenshotPath).Length > 10_000);

        // Chinese: the notice and the buttons change language.
        await page.ClickAsync("#lang-zh");
        Assert.Contains("不是医疗器械", await page.Locator("#notice").InnerTextAsync());
        Assert.Equal("生成报告", await page.Locator("#report-button").InnerTextAsync());

        // A new conversation clears the chat and the report but keeps the image.
        await page.ClickAsync("#new-conversation");
        await page.WaitForFunctionAsync("() => document.querySelectorAll('#messages li').length === 0");
        Assert.Equal("", (await page.Locator("#report").InnerTextAsync()).Trim());
        Assert.True(await page.Locator("#viewer").IsVisibleAsync());
        turns = System.Text.Json.Nodes.JsonNode.Parse(await live.Client.GetStringAsync($"/api/sessions/{id}", Ct))!["turns"]!.AsArray();
        Assert.Empty(turns);
        Assert.Empty(pageErrors);
    }

    /// <summary>
    /// What went wrong shows where the person looks: a refused API key is forgotten (not kept in the tab's storage) and
    /// said in the image panel; a failed upload says why beside the image, and the file input is emptied so the same file
    /// can be chosen again; the page has its icon.
    /// </summary>
    [Fact]
    public async Task ErrorsShowInTheirPanelAWrongKeyIsForgottenAndTheSameFileCanBeChosenAgain()
    {
        string chromium = Chromium.Ensure();
        const string key = "right-key-for-the-page";
        await using var live = await LiveServer.StartAsync(o => o with { ApiKey = key, DefaultMaxTokens = 4 });
        using var playwright = await Playwright.CreateAsync();
        await using var browser = await playwright.Chromium.LaunchAsync(new BrowserTypeLaunchOptions
        {
            ExecutablePath = chromium,
            Headless = true,
            Args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"],
        });
        var page = await browser.NewPageAsync(new BrowserNewPageOptions { Locale = "en-US" });
        var pageErrors = new List<string>();
        page.PageError += (_, error) => pageErrors.Add(error);
        var notFound = new List<string>();
        page.Response += (_, response) => { if (response.Status == 404) notFound.Add(response.Url); };
        page.SetDefaultTimeout(30_000);

        async Task EnterKey(string value)
        {
            await page.Locator("#key-dialog[open]").WaitForAsync();
            await page.FillAsync("#key-input", value);
            await page.ClickAsync("#key-form button[value=ok]");
        }

        // A wrong key: refused, forgotten, and said beside the image.
        await page.GotoAsync(live.Address.ToString());
        await EnterKey("a-wrong-key-123");
        await page.Locator("#image-error").WaitForAsync(new LocatorWaitForOptions { State = WaitForSelectorState.Visible });
        Assert.Contains("not valid", await page.Locator("#image-error").InnerTextAsync());
        Assert.Null(await page.EvaluateAsync<string?>("() => sessionStorage.getItem('xrayvl-api-key')"));
        Assert.Equal("", await page.EvaluateAsync<string>("() => window.xrayvl.state.apiKey"));

        // The right key on the next try; then a file that is no image: the reason shows in the image panel.
        string notAnImage = Path.Combine(TempDir.Create("xrayvl-browser"), "notes.png");
        await File.WriteAllTextAsync(notAnImage, "just text, named .png", Ct);
        await page.Locator("#file").SetInputFilesAsync(notAnImage);
        await EnterKey(key);
        await page.WaitForFunctionAsync("() => document.getElementById('image-error').textContent.includes('not a supported image')");
        Assert.True(await page.Locator("#image-error").IsVisibleAsync());
        Assert.Equal(key, await page.EvaluateAsync<string>("() => sessionStorage.getItem('xrayvl-api-key')"));
        // Emptied: choosing the same file again is a change the page sees.
        Assert.Equal("", await page.EvaluateAsync<string>("() => document.getElementById('file').value"));

        // A good file clears the error.
        await page.Locator("#file").SetInputFilesAsync(ServingModel.SampleImages[0]);
        await page.Locator("#viewer").WaitForAsync(new LocatorWaitForOptions { State = WaitForSelectorState.Visible });
        await page.WaitForFunctionAsync("() => document.getElementById('image-error').hidden");

        // The icon is one the browser can draw (32 px wide), served from the page's own origin (checked before a route
        // is set below: Chromium does not fetch favicons while Playwright intercepts requests).
        Assert.Equal(32, await page.EvaluateAsync<int>("""
            () => new Promise(resolve => {
              const icon = new Image();
              icon.onload = () => resolve(icon.naturalWidth);
              icon.onerror = () => resolve(-1);
              icon.src = '/favicon.ico';
            })
            """));

        // A failed report says why in the report panel, not beside the image (the server's answer replaced by a busy one).
        await page.RouteAsync("**/api/sessions/*/messages", route => route.FulfillAsync(new RouteFulfillOptions
        {
            Status = 503, ContentType = "application/json",
            Body = """{"error": {"message": "the server is busy: try again shortly", "type": "server_busy", "param": null, "code": "server_busy"}}""",
        }));
        await page.ClickAsync("#report-button");
        await page.WaitForFunctionAsync("() => document.getElementById('report-error').textContent.includes('busy')");
        Assert.True(await page.Locator("#report-error").IsVisibleAsync());
        Assert.False(await page.Locator("#image-error").IsVisibleAsync());
        Assert.Contains("busy", await page.Locator("#status").InnerTextAsync());

        Assert.Empty(notFound);
        Assert.Empty(pageErrors);
    }
}

/// <summary>Debian's Chromium: found at /usr/bin/chromium, or installed with apt-get (as root) the first time.</summary>
internal static class Chromium
{
    public const string Path = "/usr/bin/chromium";
    private static readonly Lazy<string> Installed = new(Install);

    public static string Ensure() => Installed.Value;

    private static string Install()
    {
        if (File.Exists(Path)) return Path;
        string log = "";
        foreach (var args in new[] { "update -qq", "install -y -qq --no-install-recommends chromium" })
        {
            var start = new ProcessStartInfo("apt-get", args) { RedirectStandardOutput = true, RedirectStandardError = true };
            start.Environment["DEBIAN_FRONTEND"] = "noninteractive";
            using var process = Process.Start(start) ?? throw new InvalidOperationException("apt-get could not be started");
            var output = process.StandardOutput.ReadToEndAsync();
            var error = process.StandardError.ReadToEndAsync();
            if (!process.WaitForExit(TimeSpan.FromMinutes(10))) process.Kill(entireProcessTree: true);
            log += output.Result + error.Result;
        }
        return File.Exists(Path) ? Path
            : throw new InvalidOperationException($"Chromium is missing at {Path} and apt-get could not install it (run as root: apt-get install -y chromium): {log[^Math.Min(400, log.Length)..]}");
    }
}
