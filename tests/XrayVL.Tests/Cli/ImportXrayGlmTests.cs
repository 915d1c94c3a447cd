using TorchSharp;
using XrayVL.Imaging;
using XrayVL.Inference;
using XrayVL.IO;
using XrayVL.Kernels;
using XrayVL.Modeling;
using XrayVL.Tests.Modeling;
using XrayVL.Tests.Serving;
using XrayVL.Tests.Support;
using XrayVL.Tests.Text;
using XrayVL.Text;
using static TorchSharp.torch;

namespace XrayVL.Tests.Cli;

/// <summary>
/// `xrayvl import xrayglm` on the fixture's SAT folder as it is. The fixture ships no ice_text.model (see its README), so
/// the tests pass the ChatGLM-layout SentencePiece model of <see cref="ChatGlmTokenizerTests"/> with an id offset that
/// puts its [MASK] [gMASK] … &lt;sop&gt; &lt;eop&gt; on the real ids 130000..130005.
/// </summary>
public sealed class ImportXrayGlmTests
{
    /// <summary>[MASK] is piece 435 of the test model; the real [MASK] is 130000.</summary>
    private const int Offset = 130000 - 435;

    private static string Tokenizer(TempDir dir)
    {
        string path = Path.Combine(dir.Path, "ice_text.model");
        File.WriteAllBytes(path, ChatGlmTokenizerTests.BuildModel());
        return path;
    }

    private static Tensor Reference(string caseName, string name) => GlmFixture.Reference(caseName, name);

    private static long[] Ids(string caseName, string name) => Reference(caseName, name).data<long>().ToArray();

    [Theory]
    [InlineData("merge")]
    [InlineData("adapter")]
    public void ImportedFolderLoadsAndAnswersAsXrayGlm(string lora)
    {
        using var dir = new TempDir();
        string output = Path.Combine(dir.Path, "xrayglm");
        var r = CliRunner.Run("import", "xrayglm", GlmFixture.Seed("checkpoint"), output, "--tokenizer", Tokenizer(dir),
            "--num-image-tokens", Offset.ToString(), "--lora", lora);
        Assert.True(r.ExitCode == 0, r.Err);
        Assert.Contains("LoRA in 4 layers", r.Out);
        Assert.Equal(lora == "adapter", Directory.Exists(Path.Combine(output, VisualGlmFolder.AdapterFolder)));
        Assert.True(VisualGlmFolder.IsVisualGlm(output));

        using var loaded = VisualGlmFolder.Load(output);
        using var scope = torch.NewDisposeScope();
        Assert.Equal(130001L, loaded.Tokenizer.GmaskId);
        foreach (string caseName in new[] { "chat_1turn", "chat_2turn" })
        {
            long[] ids = Ids(caseName, "input_ids");
            int preImage = (int)Ids(caseName, "pre_image")[0];
            Assert.Equal(Ids(caseName, "chat_gen_ids"), loaded.Model.Generate(ids, Reference("vision", "pixels"), preImage, 16, repetitionPenalty: 1.2));
        }
        using var noGrad = torch.no_grad();
        var image = loaded.Model.ImageEncoder.call(Reference("vision", "pixels"));
        Assert.True(ReferenceOutputs.RelativeError(image, Reference("vision", "image_embeds")) < 1e-4);
    }

    [Fact]
    public void AdapterModeKeepsXrayGlmOriginalWeights()
    {
        using var dir = new TempDir();
        string output = Path.Combine(dir.Path, "xrayglm");
        var result = VisualGlmFolder.Import(GlmFixture.Seed("checkpoint"), output,
            new XrayGlmImportOptions { Lora = SatLoraHandling.Adapter, TokenizerPath = Tokenizer(dir), NumImageTokens = Offset });
        Assert.Equal(4, result.LoraLayers.Count);
        string weights = Path.Combine(output, Checkpoint.WeightsFileName);
        var original = SafeTensors.Load(weights, ["language_model.transformer.layers.14.attention.query_key_value.weight"]).Values.Single();
        Assert.Equal(Reference("lora_merge", "L14_query_key_value_original_weight").data<float>().ToArray(), original.to(ScalarType.Float32).data<float>().ToArray());
        var adapter = SafeTensors.ReadHeader(Path.Combine(output, VisualGlmFolder.AdapterFolder, Lora.WeightsFileName));
        Assert.Equal(8, adapter.Tensors.Count);
        Assert.Equal(30, Lora.ReadConfig(Path.Combine(output, VisualGlmFolder.AdapterFolder)).R);
    }

    [Fact]
    public void BaseFolderFillsWhatTheCheckpointLacks()
    {
        using var dir = new TempDir();
        string loraOnly = Path.Combine(AppContext.BaseDirectory, "Cli", "Fixtures", "xrayglm-lora-only");
        string output = Path.Combine(dir.Path, "xrayglm");
        var options = new XrayGlmImportOptions { TokenizerPath = Tokenizer(dir), NumImageTokens = Offset };
        // Alone, the LoRA matrices have no weights to go with: refused, nothing written.
        Assert.Contains("incomplete", Assert.Throws<XrayVLException>(() => VisualGlmFolder.Import(loraOnly, output, options)).Message);
        Assert.False(Directory.Exists(output));
        var result = VisualGlmFolder.Import(loraOnly, output, options with { BaseDirectory = GlmFixture.Seed("checkpoint") });
        Assert.Equal(425 - 16, result.FromBase);
        Assert.Equal(4, result.LoraLayers.Count);
        using var loaded = VisualGlmFolder.Load(output);
        using var scope = torch.NewDisposeScope();
        Assert.Equal(Ids("chat_1turn", "chat_gen_ids"),
            loaded.Model.Generate(Ids("chat_1turn", "input_ids"), Reference("vision", "pixels"), (int)Ids("chat_1turn", "pre_image")[0], 16, repetitionPenalty: 1.2));
    }

    [Fact]
    public void MissingOrMismatchedTokenizerIsAOneLineError()
    {
        using var dir = new TempDir();
        string output = Path.Combine(dir.Path, "out");
        var missing = CliRunner.Run("import", "xrayglm", GlmFixture.Seed("checkpoint"), output);
        Assert.Equal(1, missing.ExitCode);
        Assert.Contains("ice_text.model", missing.Err);
        Assert.Single(missing.Err.Trim().Split('\n'));
        var wrongOffset = CliRunner.Run("import", "xrayglm", GlmFixture.Seed("checkpoint"), output, "--tokenizer", Tokenizer(dir));
        Assert.Equal(1, wrongOffset.ExitCode);
        Assert.Contains("num_image_tokens", wrongOffset.Err);
        Assert.False(Directory.Exists(output));
        var notSat = CliRunner.Run("import", "xrayglm", dir.Path, output);
        Assert.Equal(1, notSat.ExitCode);
        Assert.Contains("not a SAT checkpoint folder", notSat.Err);
    }
}

/// <summary>The fixture imported once (LoRA merged, the test tokenizer at the real special ids) for the front-end tests.</summary>
public sealed class ImportedXrayGlm : IDisposable
{
    private readonly TempDir dir = new();

    public string Directory { get; }

    public ImportedXrayGlm()
    {
        Directory = Path.Combine(dir.Path, "xrayglm-fixture");
        string tokenizer = Path.Combine(dir.Path, "ice_text.model");
        File.WriteAllBytes(tokenizer, ChatGlmTokenizerTests.BuildModel());
        VisualGlmFolder.Import(GlmFixture.Seed("checkpoint"), Directory,
            new XrayGlmImportOptions { TokenizerPath = tokenizer, NumImageTokens = 130000 - 435 });
    }

    public void Dispose() => dir.Dispose();
}

/// <summary>
/// The XrayGLM pipeline on an imported folder: against XrayGLM's chat() tokens, through the shared chat session, in int8,
/// and behind `report`, `chat` and `serve`.
/// </summary>
public sealed class XrayGlmPipelineTests(ImportedXrayGlm imported) : IClassFixture<ImportedXrayGlm>
{
    private static string Image => GlmFixture.Seed("2_1.png");
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Fact]
    public void GenerationReproducesXrayGlmChatTokens()
    {
        using var loaded = VisualGlmFolder.Load(imported.Directory);
        var pipeline = new XrayGlmPipeline(loaded);
        foreach (string caseName in new[] { "chat_1turn", "chat_2turn" })
        {
            long[] ids = GlmFixture.Reference(caseName, "input_ids").data<long>().ToArray();
            int preImage = (int)GlmFixture.Reference(caseName, "pre_image").data<long>()[0];
            var (tokens, reason) = pipeline.GenerateIds(ids, null, preImage, pipeline.Decoding() with { MaxNewTokens = 16 }, GlmFixture.Reference("vision", "pixels"));
            long[] expected = GlmFixture.Reference(caseName, "chat_gen_ids").data<long>().ToArray();
            Assert.Equal(expected.TakeWhile(t => t != 130005), tokens);      // the pipeline does not hand out <eop>
            Assert.Equal(expected.Contains(130005) ? FinishReason.Stop : FinishReason.Length, reason);
        }
    }

    [Fact]
    public void PromptIsXrayGlmsWithTheImageAfterImg()
    {
        using var loaded = VisualGlmFolder.Load(imported.Directory);
        var pipeline = new XrayGlmPipeline(loaded);
        var (ids, preImage) = pipeline.Prompt([("q1", "a1")], "q2");
        Assert.Equal(loaded.Tokenizer.Encode("<img>"), ids[..preImage]);
        Assert.All(ids[preImage..(preImage + 32)], id => Assert.Equal(loaded.Tokenizer.PadId, id));
        Assert.Equal(loaded.Tokenizer.Encode("</img>问：q1\n答：a1\n问：q2\n答："), ids[(preImage + 32)..^2]);
        Assert.Equal([130001L, 130004L], ids[^2..]);
    }

    [Fact]
    public async Task ConversationsAreXrayGlmRoundsAndStreamTheDirectTokens()
    {
        using var loaded = VisualGlmFolder.Load(imported.Directory);
        var pipeline = new XrayGlmPipeline(loaded);
        var image = ImageFile.Load(Image);
        var options = pipeline.Decoding() with { MaxNewTokens = 8 };
        async Task<List<long>> Streamed(params Turn[] turns)
        {
            var tokens = new List<long>();
            await foreach (int id in pipeline.Start(new Conversation("a system prompt XrayGLM does not have", turns), [image], options, Ct)) tokens.Add(id);
            return tokens;
        }
        List<long> Direct(IReadOnlyList<(string, string)> history, string query)
        {
            var (ids, preImage) = pipeline.Prompt(history, query);
            return pipeline.GenerateIds(ids, image, preImage, options).Tokens;
        }
        var twoRounds = await Streamed(new Turn(TurnRole.User, "这张片子正常吗？", 1), new Turn(TurnRole.Assistant, "正常"), new Turn(TurnRole.User, "还有别的吗？"));
        Assert.Equal(Direct([("这张片子正常吗？", "正常")], "还有别的吗？"), twoRounds);
        Assert.NotEqual(Direct([], "还有别的吗？"), twoRounds);                  // the first round reached the prompt
        Assert.Equal(Direct([], "这张片子正常吗？"), await Streamed(new Turn(TurnRole.User, "这张片子正常吗？", 1)));

        // Two images, or turns that do not alternate, are refused before any output.
        Assert.Throws<XrayVLException>(() => pipeline.Start(new Conversation(null, [new Turn(TurnRole.User, "q", 2)]), [image, image], options, Ct));
        Assert.Throws<XrayVLException>(() => pipeline.Start(new Conversation(null, [new Turn(TurnRole.User, "q", 1), new Turn(TurnRole.User, "q")]), [image], options, Ct));

        // The chat session keeps the rounds; a second X-ray starts a new conversation, as in XrayGLM's chat.
        var session = new ChatSession(pipeline);
        Assert.Equal("zh", session.Language);
        Assert.False(session.AddImage(image));
        await session.AskAllAsync("这张片子正常吗？", options, Ct);
        await session.AskAllAsync("还有别的吗？", options, Ct);
        Assert.Equal(4, session.Messages.Count);
        Assert.True(session.AddImage(image));
        Assert.Empty(session.Messages);
        Assert.Equal(1, session.ImageCount);
    }

    [Fact]
    public void ModelSquareIsWhatTheEncoderSees()
    {
        using var loaded = VisualGlmFolder.Load(imported.Directory);
        var pipeline = new XrayGlmPipeline(loaded);
        var image = ImageFile.Load(Image);
        var square = pipeline.ModelSquare(image);
        Assert.Equal((loaded.Preprocess.ImageSize, loaded.Preprocess.ImageSize), (square.Width, square.Height));
        var p = loaded.Preprocess;
        Assert.Equal(PilBicubic.BlipEval(image, p.ImageSize, p.Mean, p.Std).data<float>().ToArray(),
                     PilBicubic.BlipEval(square, p.ImageSize, p.Mean, p.Std).data<float>().ToArray());
    }

    [Fact]
    public void Int8LogitsStayCloseToFp32()
    {
        using var scope = torch.NewDisposeScope();
        using var noGrad = torch.no_grad();
        using var fp32 = VisualGlmFolder.Load(imported.Directory, WeightFormat.Fp32);
        using var int8 = VisualGlmFolder.Load(imported.Directory, WeightFormat.Int8);
        Assert.All(int8.Model.LanguageModel.modules().OfType<AdaptableLinear>(), l => Assert.Equal(LinearQuantization.Q8, l.Quantization));
        foreach (string caseName in new[] { "chat_1turn", "chat_2turn" })
        {
            Tensor Logits(LoadedVisualGlm m)
            {
                var glm = m.Model.LanguageModel;
                var hidden = glm.ForwardHidden(GlmFixture.Reference(caseName, "inputs_embeds"), GlmFixture.Reference(caseName, "position_ids"),
                    GlmFixture.Reference(caseName, "attention_mask"));
                return glm.Logits(hidden.narrow(1, hidden.shape[1] - 1, 1)).view(-1);
            }
            var reference = Logits(fp32);
            double relative = (Logits(int8) - reference).abs().max().item<float>() / reference.abs().max().item<float>();
            Assert.True(relative <= 2e-2, $"{caseName}: int8 logits differ from fp32 by {relative:E2} of the largest");
        }
    }

    [Fact]
    public void ReportSpeaksChineseByDefaultEnglishWhenAskedAndRunsInInt8()
    {
        var r = CliRunner.Run("report", Image, "--model", imported.Directory, "--json", "--max-tokens", "6");
        Assert.True(r.ExitCode == 0, r.Err);
        var json = System.Text.Json.Nodes.JsonNode.Parse(r.Out.Trim())!;
        Assert.Equal("zh", json["language"]!.GetValue<string>());
        Assert.Equal("xrayglm-fixture", json["model"]!.GetValue<string>());
        Assert.NotNull(json["finish_reason"]);
        var en = CliRunner.Run("report", Image, "--model", imported.Directory, "--lang", "en", "--max-tokens", "4");
        Assert.True(en.ExitCode == 0, en.Err);
        Assert.Contains(Constants.Disclaimer("en"), en.Out);
        var int8 = CliRunner.Run("report", Image, "--model", imported.Directory, "--dtype", "int8", "--max-tokens", "4", "--json");
        Assert.True(int8.ExitCode == 0, int8.Err);
        Assert.Equal("zh", System.Text.Json.Nodes.JsonNode.Parse(int8.Out.Trim())!["language"]!.GetValue<string>());
        var beams = CliRunner.Run("report", Image, "--model", imported.Directory, "--beams", "3");
        Assert.Equal(1, beams.ExitCode);
        Assert.Contains("beam search is not available for XrayGLM", beams.Err);
    }

    [Fact]
    public void ChatAnswersTurnsInXrayGlmsFormat()
    {
        var r = CliRunner.RunWithInput("这张片子正常吗？\n还有别的吗？\n/exit\n", "chat", Image, "--model", imported.Directory, "--max-tokens", "4", "--dtype", "bf16");
        Assert.True(r.ExitCode == 0, r.Err);
        Assert.Equal(2, r.Out.Split("xrayvl> ").Length - 1);
        Assert.Contains("XrayGLM prompt format", r.Err);
    }

    [Fact]
    public async Task ServeAnswersReportsAndChatCompletions()
    {
        await using var live = await LiveServer.StartAsync(o => o with { Model = null, ModelDir = imported.Directory });
        byte[] png = File.ReadAllBytes(Image);
        var report = await live.Client.PostAsync("/api/report", LiveServer.ImageForm(png, "2_1.png", ("max_tokens", "4")), Ct);
        string reportBody = await report.Content.ReadAsStringAsync(Ct);
        Assert.True(report.IsSuccessStatusCode, reportBody);
        var reportJson = System.Text.Json.Nodes.JsonNode.Parse(reportBody)!;
        Assert.Equal("zh", reportJson["language"]!.GetValue<string>());          // XrayGLM's language when none is asked
        Assert.Equal("xrayglm-fixture", reportJson["model"]!.GetValue<string>());

        var chat = await live.Client.PostAsync("/v1/chat/completions", LiveServer.Json(LiveServer.ChatRequest("这张片子正常吗？", png, maxTokens: 4)), Ct);
        string chatBody = await chat.Content.ReadAsStringAsync(Ct);
        Assert.True(chat.IsSuccessStatusCode, chatBody);
        var usage = System.Text.Json.Nodes.JsonNode.Parse(chatBody)!["usage"]!;
        Assert.InRange(usage["completion_tokens"]!.GetValue<int>(), 1, 4);
        Assert.Equal(2L, live.Server.Pipeline.Stats.Completed);

        var twoImages = LiveServer.ChatRequest("两张片子？", png, maxTokens: 4);
        var content = twoImages["messages"]![0]!["content"]!.AsArray();
        content.Add(content[^1]!.DeepClone());
        var refused = await live.Client.PostAsync("/v1/chat/completions", LiveServer.Json(twoImages), Ct);
        Assert.Equal(System.Net.HttpStatusCode.BadRequest, refused.StatusCode);
        Assert.Contains("one X-ray per conversation", await refused.Content.ReadAsStringAsync(Ct));
    }
}
