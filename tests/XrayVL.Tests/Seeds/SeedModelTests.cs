using System.Text.Json;
using TorchSharp;
using XrayVL.Inference;
using XrayVL.IO;
using XrayVL.Text;
using XrayVL.Tests.Support;
using static TorchSharp.torch;

namespace XrayVL.Tests.Seeds;

/// <summary>
/// XrayGPT and MiniGPT-Med imported from their released-file layouts (the fixtures in ../shared/reference/seeds, loaded
/// unchanged) against the outputs the seeds' own code recorded: prompts and their segment ids, spliced input
/// embeddings, last hidden states, logits, 16 greedy tokens for 1- and 2-turn chats, MiniGPT-Med's left-padded batch.
/// Every float output within relative error 1e-4 (max |a − b| / max |b|), as fp32 on both sides.
/// </summary>
public sealed class SeedModelTests(SeedFixture seeds) : IClassFixture<SeedFixture>
{
    private const double Tolerance = 1e-4;

    /// <summary>The chats the fixtures recorded: question, fixed first answer, second question.</summary>
    private static (string Q1, string A1, string Q2) Questions(string seed) => seed == "xraygpt"
        ? ("Describe the given chest x-ray image in detail.", "The lungs are clear. No pleural effusion.", "Is there any sign of pneumonia?")
        : ("[refer] the nodule in the left lung", "{<23><41><37><55>}", "[vqa] Is there any abnormality in the right lung?");

    private static Conversation Chat(string seed, int turns)
    {
        var (q1, a1, q2) = Questions(seed);
        var chat = new Conversation().User(q1, imageCount: 1);
        return turns == 1 ? chat : chat.Assistant(a1).User(q2);
    }

    private static int[] Ids(Tensor t) => [.. t.data<long>().Select(v => (int)v)];

    private static void AssertClose(Tensor actual, Tensor expected, string what)
    {
        double error = ReferenceOutputs.RelativeError(actual, expected);
        Assert.True(error <= Tolerance, $"{what}: relative error {error:E2} > {Tolerance:E0}");
    }

    public static TheoryData<string, int> Cases => new() { { "xraygpt", 1 }, { "xraygpt", 2 }, { "minigpt_med", 1 }, { "minigpt_med", 2 } };

    [Theory]
    [MemberData(nameof(Cases))]
    public void PromptsAndSegmentIdsAreTheSeedsOwn(string seed, int turns)
    {
        var recorded = SeedFixture.Prompts(seed).GetProperty("turns").GetProperty($"turn{turns}");
        var refs = SeedFixture.Refs(seed);
        int[] seg0 = Ids(refs.Tensor($"turn{turns}_seg0_ids")), seg1 = Ids(refs.Tensor($"turn{turns}_seg1_ids"));
        string llm = seed == "xraygpt" ? SeedFixture.Seed(seed, "Vicuna_Radiology_fp16") : SeedFixture.Seed(seed, "llama-2-7b-chat-hf");
        // The language model's own folder with the family's format, and the imported folder (tokenizer + prompt_format.json).
        var original = XrayTokenizer.Load(llm);
        original.UsePromptFormat(PromptFormat.Named(seed));
        foreach (var tokenizer in new[] { original, XrayTokenizer.Load(seeds.Folder(seed)) })
        {
            Assert.Equal(seed, tokenizer.PromptFormat!.Name);
            Assert.Equal(recorded.GetProperty("prompt").GetString(), ChatTemplate.RenderText(Chat(seed, turns), tokenizer, addGenerationPrompt: true));
            var rendered = ChatTemplate.Render(Chat(seed, turns), tokenizer, addGenerationPrompt: true);
            Assert.Equal([.. seg0, tokenizer.ImageId, .. seg1], rendered.Ids);
            Assert.Equal([seg0.Length], rendered.ImagePositions);
            Assert.Equal(seg0.Length, recorded.GetProperty("image_token_offset").GetInt32());
        }
    }

    [Fact]
    public void MiniGptMedTaskPromptsAndBoxesTokeniseAsTheSeedsLegacyTokenizer()
    {
        var tokenizer = XrayTokenizer.Load(SeedFixture.Seed("minigpt_med", "llama-2-7b-chat-hf"));
        var cases = SeedFixture.Prompts("minigpt_med").GetProperty("tokenizer_cases");
        Assert.True(cases.EnumerateObject().Count() >= 7);
        foreach (var c in cases.EnumerateObject())
            Assert.Equal([.. c.Value.EnumerateArray().Select(e => e.GetInt32())], tokenizer.EncodeLegacy(c.Name));
        // A literal <s> is BOS, and the text after it starts a new piece with the dummy "▁" (518 "▁[", not 29961 "[").
        Assert.Equal([1, 1, 518, 25580, 29962], tokenizer.EncodeLegacy("<s>[INST]", addBos: true));
        Assert.All(PromptFormat.MiniGptMed.TaskIdentifiers, t => Assert.Matches(@"^\[[a-z]+\]$", t));
    }

    [Fact]
    public void ImportedConfigNamesTheSeedsParts()
    {
        var xraygpt = XrayVL.Modeling.ConfigFile.Read<XrayVL.Modeling.VisionLanguageConfig>(Path.Combine(seeds.XrayGpt, "config.json"));
        Assert.Equal("eva_vit_g_qformer", xraygpt.VisionConfig.ModelType);
        Assert.Equal(4, xraygpt.VisionConfig.QformerConfig!.NumQueryTokens);
        Assert.Equal(2, xraygpt.VisionConfig.QformerConfig.CrossAttentionFreq);
        Assert.Equal(("linear", "full", 56, 279), (xraygpt.ProjectorType, xraygpt.VisionFeatureSelectStrategy, xraygpt.VisionConfig.ImageSize, xraygpt.VisionConfig.IntermediateSize));
        Assert.Equal(1e-6, xraygpt.TextConfig.RmsNormEps);
        var med = XrayVL.Modeling.ConfigFile.Read<XrayVL.Modeling.VisionLanguageConfig>(Path.Combine(seeds.MiniGptMed, "config.json"));
        Assert.Equal(("eva_vit_g", "merge4", "default", 112), (med.VisionConfig.ModelType, med.ProjectorType, med.VisionFeatureSelectStrategy, med.VisionConfig.ImageSize));
        Assert.Null(med.VisionConfig.QformerConfig);
        Assert.Equal(1e-5, med.TextConfig.RmsNormEps);
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void EmbeddingsHiddenStatesLogitsAndGreedyTokensMatchTheSeed(string seed, int turns)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var loaded = Checkpoint.Load(seeds.Folder(seed));
        using var _ = loaded.Model;
        var refs = SeedFixture.Refs(seed);
        string t = $"turn{turns}";

        var imageEmbeds = loaded.Model.EncodeImages(refs.Tensor("pixels"));                              // (1, Nv, D)
        AssertClose(imageEmbeds, refs.Tensor("image_embeds"), "image embeds");

        var rendered = ChatTemplate.Render(Chat(seed, turns), loaded.Tokenizer, addGenerationPrompt: true);
        var (ids, _) = XrayVL.Modeling.VisionLanguageModel.ExpandImagePlaceholders(rendered.Ids, rendered.Labels, loaded.Tokenizer.ImageId, loaded.Model.TokensPerImage);
        var embeds = loaded.Model.Embed(torch.tensor(ids, ScalarType.Int64).unsqueeze(0), imageEmbeds); // (1, T, D)
        AssertClose(embeds, refs.Tensor($"{t}_inputs_embeds"), "spliced input embeddings");

        var lm = loaded.Model.LanguageModel;
        var hidden = lm.ForwardHidden(embeds);                                                            // (1, T, D)
        AssertClose(hidden, refs.Tensor($"{t}_last_hidden"), "last hidden states");
        var logits = lm.Logits(hidden);                                                                   // (1, T, V)
        AssertClose(logits[.., -1], refs.Tensor($"{t}_logits_last"), "last logits");
        AssertClose(logits[.., .., ..512], refs.Tensor($"{t}_logits_vocab0_512"), "logits of vocab 0..511");

        // Greedy with full recompute, as recorded. Where the top-2 margin is small (3.6e-4 at XrayGPT turn-1 step 11), the
        // margin itself is compared: equal tokens alone would not show whether the logits agree there.
        var recorded = SeedFixture.Prompts(seed).GetProperty("turns").GetProperty(t);
        double[] margins = [.. recorded.GetProperty("greedy16_top2_margins").EnumerateArray().Select(e => e.GetDouble())];
        int[] expected = Ids(refs.Tensor($"{t}_greedy16"));
        var sequence = embeds;
        var greedy = new List<int>();
        for (int step = 0; step < 16; step++)
        {
            var last = lm.Forward(sequence)[0, -1];                                                       // (V)
            var (top, index) = last.topk(2);
            greedy.Add((int)index[0].item<long>());
            double margin = (top[0] - top[1]).item<float>();
            double scale = last.abs().max().item<float>();
            Assert.True(Math.Abs(margin - margins[step]) <= Tolerance * scale,
                $"step {step}: top-2 margin {margin:E3}, the seed's {margins[step]:E3} (logit scale {scale:F2})");
            var next = lm.Embed(torch.tensor(new long[] { greedy[^1] }).unsqueeze(0));                    // (1, 1, D)
            sequence = torch.cat([sequence, next], 1);
        }
        Assert.Equal(expected, greedy);
        if (seed == "xraygpt" && turns == 1) Assert.True(margins.Min() < 4e-4);                           // the close step is exercised

        // The generator XrayVL's front ends use (KV cache, greedy) gives the same tokens.
        var options = new GenerationOptions { MaxNewTokens = 16 };
        Assert.Equal(expected, new XrayVL.Inference.TokenGenerator(lm).Generate(embeds, options, cancellationToken: TestContext.Current.CancellationToken).ToArray());
    }

    [Fact]
    public void MiniGptMedLeftPaddedBatchMatchesTheSeedsEvaluationPath()
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var loaded = Checkpoint.Load(seeds.MiniGptMed);
        using var _ = loaded.Model;
        var refs = SeedFixture.Refs("minigpt_med");
        var batch = SeedFixture.Prompts("minigpt_med").GetProperty("eval_generate");
        string[] texts = [.. batch.GetProperty("texts").EnumerateArray().Select(e => e.GetString()!)];
        var pixels = refs.Tensor("pixels");
        Tensor[] images = [pixels, pixels.flip(-1)];                                                      // row 1: the mirrored image

        // Each row as the seed's prepare_texts writes it ("<s>[INST] <Img><ImageHere></Img> {question} [/INST]").
        var rows = new List<Tensor>();
        for (int r = 0; r < 2; r++)
        {
            string question = texts[r].Split("</Img> ")[1].Split(" [/INST]")[0];
            var chat = new Conversation().User(question, imageCount: 1);
            Assert.Equal(texts[r], ChatTemplate.RenderText(chat, loaded.Tokenizer, addGenerationPrompt: true));
            var rendered = ChatTemplate.Render(chat, loaded.Tokenizer, addGenerationPrompt: true);
            var (ids, _) = XrayVL.Modeling.VisionLanguageModel.ExpandImagePlaceholders(rendered.Ids, rendered.Labels, loaded.Tokenizer.ImageId, loaded.Model.TokensPerImage);
            rows.Add(loaded.Model.Embed(torch.tensor(ids, ScalarType.Int64).unsqueeze(0), loaded.Model.EncodeImages(images[r]))[0]);
        }
        long length = rows.Max(r => r.shape[0]);
        // Left padding with zero embeddings and mask 0, as MiniGPTBase.generate pads.
        var embeds = torch.stack(rows.Select(r => torch.cat([torch.zeros(length - r.shape[0], r.shape[1]), r], 0)));
        var mask = torch.stack(rows.Select(r => torch.cat([torch.zeros(length - r.shape[0], ScalarType.Int64), torch.ones(r.shape[0], ScalarType.Int64)])));
        Assert.Equal(refs.Tensor("eval_batch_attention_mask").data<long>().ToArray(), mask.data<long>().ToArray());
        AssertClose(embeds, refs.Tensor("eval_batch_inputs_embeds"), "batch input embeddings");
        var logits = loaded.Model.LanguageModel.Forward(embeds, mask, logitsForLastOnly: true)[.., 0];     // (2, V)
        AssertClose(logits, refs.Tensor("eval_batch_logits_last"), "batch last logits");

        // Batched greedy generation (left padding, KV cache) gives each row's unpadded greedy tokens, as the seed's.
        int[][] expected = [.. batch.GetProperty("row_greedy16_unpadded").EnumerateArray().Select(r => r.EnumerateArray().Select(e => e.GetInt32()).ToArray())];
        var generated = new XrayVL.Inference.TokenGenerator(loaded.Model.LanguageModel).GenerateBatch([.. rows.Select(r => r.unsqueeze(0))], new GenerationOptions { MaxNewTokens = 16 }, cancellationToken: TestContext.Current.CancellationToken);
        Assert.Equal(expected, generated);
    }
}
