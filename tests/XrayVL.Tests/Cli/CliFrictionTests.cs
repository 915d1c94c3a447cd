using System.CommandLine;
using XrayVL.Benchmarks;
using XrayVL.Cli;
using XrayVL.Data;
using XrayVL.Data.Sources;
using XrayVL.Imaging;
using XrayVL.Kernels;
using XrayVL.Plotting;
using XrayVL.Tests.Support;
using XrayVL.Tests.Training;

namespace XrayVL.Tests.Cli;

/// <summary>What a new user meets on the command line: names, messages, list options, Ctrl-C, progress output.</summary>
public class CliFrictionTests
{
    [Fact]
    public void LargeWeightsLoadUnderAProgressBarSmallOnesWithout()
    {
        using var dir = new TempDir();
        string weights = Path.Combine(dir.Path, "model.safetensors");
        int Load(Action<long, long> progress)
        {
            progress(1, 2);
            progress(2, 2);
            return 7;
        }
        using (var file = File.Create(weights)) file.SetLength(ModelLocator.LoadingBarBytes);   // sparse: no disk is used
        var err = new StringWriter();
        Assert.Equal(7, ModelLocator.WithLoadingBar(new CliIO(TextWriter.Null, err, TextReader.Null), dir.Path, WeightFormat.Bf16, Load));
        Assert.Contains("loading", err.ToString());
        Assert.Contains("0.5 GB of weights as bf16", err.ToString());
        Assert.Contains("loaded in", err.ToString());

        using (var file = File.OpenWrite(weights)) file.SetLength(1000);
        var quiet = new StringWriter();
        Assert.Equal(7, ModelLocator.WithLoadingBar(new CliIO(TextWriter.Null, quiet, TextReader.Null), dir.Path, WeightFormat.Bf16, Load));
        Assert.Equal("", quiet.ToString());
    }

    [Fact]
    public void UsageLinesNameTheProgram()
    {
        var r = CliRunner.Run("report", "--help");
        Assert.Equal(0, r.ExitCode);
        Assert.Contains("xrayvl report <images>... [options]", r.Out);
        Assert.DoesNotContain("XrayVL.Cli", r.Out + r.Err);
        var bare = CliRunner.Run();
        Assert.Contains("xrayvl [command] [options]", bare.Out);
        Assert.DoesNotContain("Required command", bare.Out + bare.Err);
    }

    [Fact]
    public void ErrorsNameFlagsNotFieldsOrTypes()
    {
        string image = SharedData.File("iu-xray", "images", "2_1.png");
        var notNumber = CliRunner.Run("report", image, "--beams", "x");
        Assert.Equal(1, notNumber.ExitCode);
        Assert.Equal("error: --beams takes a whole number, not 'x' (see `xrayvl report --help`)", notNumber.Err.Trim());

        var zero = CliRunner.Run("report", image, "--beams", "0");
        Assert.Equal(1, zero.ExitCode);
        Assert.Contains("--beams must be at least 1 (got 0)", zero.Err);
        Assert.DoesNotContain("num_beams", zero.Err);

        var temperature = CliRunner.Run("chat", image, "--temperature", "-0.5");
        Assert.Contains("--temperature must be at least 0 (got -0.5)", temperature.Err);
        var tokens = CliRunner.Run("report", image, "--max-tokens", "many");
        Assert.Contains("--max-tokens takes a whole number, not 'many'", tokens.Err);
        Assert.DoesNotContain("System.", tokens.Err);
    }

    [Theory]
    [InlineData("report vqa")]
    [InlineData("report,vqa")]
    [InlineData("report, vqa")]
    [InlineData("report,vqa ground")]
    public void ListOptionsTakeSpacesOrCommas(string given)
    {
        var tasks = CommonOptions.List("--tasks", "tasks", ["all"]);
        var command = new Command("x") { tasks };
        var parse = command.Parse(["--tasks", .. given.Split(' ')]);
        Assert.Empty(parse.Errors);
        string[] expected = given.Contains("ground") ? ["report", "vqa", "ground"] : ["report", "vqa"];
        Assert.Equal(expected, CommonOptions.Values(parse, tasks));
        Assert.Equal(["all"], CommonOptions.Values(command.Parse([]), tasks));
    }

    [Fact]
    public void DataInstructionsAndEvalAcceptCommaLists()
    {
        // An unknown task named the comma way is refused by name, as the space way is (same parsing everywhere).
        foreach (string[] args in new[] { new[] { "report,nosuch" }, ["report", "nosuch"] })
        {
            var r = CliRunner.Run(["data", "instructions", "missing.jsonl", "--out", "x.jsonl", "--tasks", .. args]);
            Assert.Equal(1, r.ExitCode);
            Assert.Contains("--tasks: unknown task(s) nosuch", r.Err);
        }
    }

    [Fact]
    public void BenchReportsSpreadAndWarnsWhenRepeatsDisagree()
    {
        var steady = new BenchReport("m", 10, 2, [new BenchFigure("decode", new Spread(9.5, 10, 10.4), "tokens/s")],
            new Dictionary<string, Spread> { ["a vs b"] = Bench.Ratio(new Spread(9.5, 10, 10.4), new Spread(4.9, 5, 5.2)) });
        Assert.Null(steady.Warning);
        string md = steady.ToMarkdown();
        Assert.Contains("| decode | 9.50 / **10.0** / 10.4 | tokens/s |", md);
        Assert.Contains("| a vs b | 1.83 / **2.00** / 2.12 |", md);   // 9.5/5.2, 10/5, 10.4/4.9

        var busy = steady with { Figures = [.. steady.Figures, new BenchFigure("prefill", new Spread(50, 100, 180), "tokens/s")] };
        Assert.StartsWith("warning: 1 of 2 figures varied by more than 25% between repeats (most: prefill)", busy.Warning);
        Assert.Contains(busy.Warning!, busy.ToMarkdown());
        Assert.Equal(new Spread(2, 4, 5), Bench.Per(1000, new Spread(200, 250, 500)));
    }

    [Fact]
    public void TrainingLinesAboveTheBarFitOneTerminalLine()
    {
        string sample = "  sample [en] " + new string('x', 200);
        string fitted = TrainCommand.TrainView.Fit(sample, 80);
        Assert.Equal(79, fitted.Length);
        Assert.EndsWith("…", fitted);
        Assert.Equal("short line", TrainCommand.TrainView.Fit("short line", 80));
        Assert.Equal("two lines", TrainCommand.TrainView.Fit("two\nlines", 80));
        // Chinese characters take two cells each: 29 of them and "…" fill 59 of 61 cells.
        string zh = TrainCommand.TrainView.Fit(new string('心', 50), 61);
        Assert.Equal(29 + 1, zh.Length);
    }

    [Fact]
    public async Task CtrlCInTrainSaysHowToResume()
    {
        var fixture = new TrainingFixture();
        var recipe = fixture.Recipe("""[ { "name": "t", "kind": "instruct", "trainable": "full", "steps": 40, "batch_size": 2 } ]""");
        string outDir = fixture.NewOut("ctrl-c");
        using var cancel = CancellationTokenSource.CreateLinkedTokenSource(TestContext.Current.CancellationToken);
        var err = new WatchingWriter(text => { if (text.Contains("step 1/40")) cancel.Cancel(); });
        int code = await App.RunAsync(["train", "--config", recipe.SourcePath!, "--out", outDir, "--seed", "9"], new StringWriter(), err, new StringReader(""), cancel.Token);
        Assert.Equal(130, code);
        // The seed override is part of the recipe's fingerprint: the printed command gives it again.
        Assert.Contains($"stopped. Continue from the last checkpoint with: xrayvl train --config {TrainCommand.Quote(recipe.SourcePath!)} --out {TrainCommand.Quote(outDir)} --resume --seed 9", err.ToString());
        Assert.True(Directory.Exists(Path.Combine(outDir, "checkpoints")), err.ToString());
        Assert.Equal("'/a b/c'", TrainCommand.Quote("/a b/c"));
        Assert.Equal("runs/x", TrainCommand.Quote("runs/x"));
    }

    [Fact]
    public async Task CtrlCInChatStopsTheAnswerNotTheChat()
    {
        string image = SharedData.File("iu-xray", "images", "2_1.png");
        var interrupts = new Interrupts();
        int answers = 0;
        // The first answer is interrupted as it starts; the second runs to the end; then /exit.
        var output = new WatchingWriter(text => { if (text == "xrayvl> " && ++answers == 1) Assert.True(interrupts.Raise()); });
        var err = new StringWriter();
        int code = await App.RunAsync(["chat", image, "--model", TinyCheckpoint.Directory, "--max-tokens", "4"], output, err,
            new StringReader("describe the image\nany effusion?\n/exit\n"), TestContext.Current.CancellationToken, interrupts);
        Assert.True(code == 0, err.ToString());
        Assert.Contains("(answer stopped; that question is not kept in the conversation)", err.ToString());
        Assert.Equal(2, answers);
        Assert.Equal(3, output.ToString().Split("you> ").Length - 1);          // the chat went on to a third prompt
        Assert.False(interrupts.Raise());                                     // the chat's handler is gone once it ended
    }

    [Fact]
    public async Task CtrlCAtTheChatPromptEndsTheChat()
    {
        string image = SharedData.File("iu-xray", "images", "2_1.png");
        var interrupts = new Interrupts();
        using var input = new BlockingReader();
        var output = new WatchingWriter(text => { if (text == "you> ") Task.Run(async () => { await Task.Delay(100, TestContext.Current.CancellationToken); interrupts.Raise(); }); });
        int code = await App.RunAsync(["chat", image, "--model", TinyCheckpoint.Directory], output, new StringWriter(), input,
            TestContext.Current.CancellationToken, interrupts);
        Assert.Equal(0, code);
    }

    [Fact]
    public void LossChartBreaksItsLinesWhereTheDataDo()
    {
        string dir = TempDir.Create("xrayvl-break");
        string path = Path.Combine(dir, "loss.png");
        // A: flat at y = 2 with a break between x = 1 and x = 2; B only sets the axes (0..3, 1..3) away from A.
        Charts.Line(path, "t", "step", "loss",
            [new Series("A", [0, 1, double.NaN, 2, 3], [2, 2, double.NaN, 2, 2]), new Series("B", [0, 0.1, double.NaN, 2.9, 3], [1, 1, double.NaN, 3, 3])]);
        var image = ImageFile.Load(path);
        // The plot spans x 80…870 and y 50…450 of the 900×520 image: y = 2 is row 250.
        float At(double x) => Enumerable.Range(248, 5).Min(row => image[(int)Math.Round(80 + x / 3 * 790), row]);
        Assert.True(At(0.5) < 0.8f, $"line expected at x = 0.5, gray {At(0.5)}");
        Assert.True(At(1.5) > 0.95f, $"no line expected across the break, gray {At(1.5)}");
        Assert.True(At(2.5) < 0.8f, $"line expected at x = 2.5, gray {At(2.5)}");

        // Legends are as wide as their names: the training curve's full name fits inside the plot.
        var (left, right) = Charts.LegendTextSpan(["train (mean of 20 steps)", "validation"]);
        Assert.True(left > 80 && right <= 870, $"{left}…{right}");
    }

    [Fact]
    public void R2GenWithoutItsImagesFailsAndPointsAtTheOfficialSplitWay()
    {
        using var t = new TempDir();
        var e = Assert.Throws<XrayVLException>(() => DatasetBuilder.Build("r2gen", new SourceOptions
        {
            Input = SharedData.File("iu-xray", "splits", "r2gen-annotation.json"),
            Images = SharedData.File("iu-xray", "images"),
        }, t.Path));
        Assert.Contains("no studies to write: none of its 2955 records has an image in", e.Message);
        Assert.Contains("--source iu-csv --split-file", e.Message);
        Assert.False(File.Exists(Path.Combine(t.Path, "manifest.jsonl")));

        // MRG-RL's annotation names IU files: the XrayGLM-named copies other sources find are found too, with the
        // annotation's own split.
        var mrg = DatasetBuilder.Build("r2gen", new SourceOptions
        {
            Input = SharedData.File("iu-xray", "splits", "mrg-rl-annotation.json"),
            Images = SharedData.File("iu-xray", "images"),
        }, t.Path);
        Assert.Equal(4, mrg.Summary.Studies);
        Assert.Equal("official, from the source", mrg.SplitMethod);
        Assert.Equal(5, mrg.Summary.Images);
    }

    /// <summary>A writer that calls back with each piece written (and keeps it all).</summary>
    private sealed class WatchingWriter(Action<string> watch) : StringWriter
    {
        public override void Write(string? value)
        {
            base.Write(value);
            if (value is not null) watch(value);
        }

        public override void WriteLine(string? value)
        {
            base.WriteLine(value);
            if (value is not null) watch(value);
        }
    }

    /// <summary>Standard input that never ends (a user who types nothing), until disposed.</summary>
    private sealed class BlockingReader : TextReader
    {
        private readonly ManualResetEventSlim closed = new();

        public override string? ReadLine()
        {
            closed.Wait();
            return null;
        }

        protected override void Dispose(bool disposing)
        {
            closed.Set();
            base.Dispose(disposing);
        }
    }
}
