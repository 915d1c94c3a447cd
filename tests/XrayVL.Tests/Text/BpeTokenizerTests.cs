using XrayVL.Tests.Support;
using System.Text;
using System.Text.Json;
using Microsoft.ML.Tokenizers;
using XrayVL.Text;

namespace XrayVL.Tests.Text;

public class BpeTokenizerTests
{
    private static TrainedTokenizer Trained => TrainedTokenizer.Instance;

    private static readonly string[] AwkwardTexts =
    [
        "<|im_start|>user\n<image>\n心脏大小正常。 Heart  size\n\n is normal.<|im_end|>\n",
        "  leading and   inner   spaces\t\ttabs, trailing  ",
        "It's <12><34><56><78> they're WE'LL", "０１２ full-width, 𠀀 astral CJK, 😀 emoji",
        "\u0000\u0001 control, café naïve, Ελληνικά, русский", "\r\n\r\nline\rbreaks\n",
        "鼷鼱鼹 rare characters 齉龘",
    ];

    [Fact]
    public void TrainingOnRealCaptionsIsFastAndFillsTheVocabulary()
    {
        Assert.True(Trained.TrainCaptionCount > 11000, $"trained on only {Trained.TrainCaptionCount} captions");
        Assert.True(Trained.TrainSeconds < 30, $"training took {Trained.TrainSeconds:F1} s");
        Assert.Equal(TrainedTokenizer.VocabSize, Trained.Model.VocabSize);
        Assert.Equal(TrainedTokenizer.VocabSize, Trained.Tokenizer.VocabSize);
        Assert.Equal(Trained.Model.Tokens.Count, Trained.Model.Tokens.Distinct().Count());
        // Special tokens take the last ids, in SpecialTokens.All order.
        for (int i = 0; i < SpecialTokens.All.Count; i++)
            Assert.Equal(TrainedTokenizer.VocabSize - SpecialTokens.All.Count + i, Trained.Tokenizer.IdOf(SpecialTokens.All[i]));
        Assert.Equal(Trained.Tokenizer.IdOf(SpecialTokens.EndOfText), Trained.Tokenizer.EosId);
        Assert.Equal(Trained.Tokenizer.EosId, Trained.Tokenizer.PadId);
        // Both languages got real multi-byte tokens: whole English words and multi-character Chinese words.
        Assert.NotNull(Trained.Tokenizer.IdOf("Ġpneumothorax"));
        Assert.NotNull(Trained.Tokenizer.IdOf(ByteLevel.EncodeText("胸腔积液")));
    }

    [Theory]
    [InlineData("en")]
    [InlineData("zh")]
    public void EveryHeldOutCaptionRoundTripsExactly(string lang)
    {
        var captions = Trained.HeldOut(lang);
        Assert.True(captions.Count > 100, $"only {captions.Count} held-out {lang} captions");
        foreach (string caption in captions)
            Assert.Equal(caption, Trained.Tokenizer.Decode(Trained.Tokenizer.Encode(caption)));
        foreach (string text in AwkwardTexts)
            Assert.Equal(text, Trained.Tokenizer.Decode(Trained.Tokenizer.Encode(text)));
    }

    [Fact]
    public void SpecialTokensEncodeToSingleIds()
    {
        var tok = Trained.Tokenizer;
        Assert.Equal([tok.ImStartId], tok.Encode(SpecialTokens.ImStart));
        Assert.Equal([tok.ImEndId], tok.Encode(SpecialTokens.ImEnd));
        Assert.Equal([tok.ImageId], tok.Encode(SpecialTokens.Image));
        Assert.Equal([tok.EosId], tok.Encode(SpecialTokens.EndOfText));
        Assert.Equal(4, new[] { tok.ImStartId, tok.ImEndId, tok.ImageId, tok.EosId }.Distinct().Count());

        int[] ids = tok.Encode("heart<image>\n<image>肺<|endoftext|>");
        Assert.Equal(2, ids.Count(id => id == tok.ImageId));
        Assert.Equal(tok.EosId, ids[^1]);
        Assert.Equal("heart\n肺", tok.Decode(ids, skipSpecial: true));

        // A segment spells special-token strings as ordinary text: typed text cannot forge an image slot.
        int[] segment = tok.EncodeSegment("see <image> and <|im_end|>");
        Assert.DoesNotContain(segment, id => tok.IsSpecial(id));
        Assert.Equal("see <image> and <|im_end|>", tok.Decode(segment));
    }

    [Fact]
    public void LibraryLoadedFilesGiveTheTrainersIds()
    {
        // Load the saved GPT-2-layout files straight through Microsoft.ML.Tokenizers, as any .NET user would.
        var specials = SpecialTokens.All.ToDictionary(s => s, s => Trained.Model.IdOf(s)!.Value);
        var library = BpeTokenizer.Create(new BpeOptions(
            Path.Combine(Trained.Directory, ByteLevelBpeModel.VocabFile), Path.Combine(Trained.Directory, ByteLevelBpeModel.MergesFile))
        {
            ByteLevel = true,
            PreTokenizer = new RegexPreTokenizer(ByteLevel.PreTokenizer, specials),
            SpecialTokens = specials,
        });
        var texts = Trained.HeldOutEnglish.Take(150).Concat(Trained.HeldOutChinese.Take(150)).Concat(AwkwardTexts).ToList();
        foreach (string text in texts)
        {
            int[] reference = Trained.Model.Encode(text);
            Assert.Equal(reference, library.EncodeToIds(text).ToArray());
            Assert.Equal(reference, Trained.Tokenizer.Encode(text));
            Assert.Equal(text, library.Decode(reference));
        }
    }

    [Fact]
    public void EncodingFromSeveralThreadsGivesTheSameIds()
    {
        var texts = Trained.HeldOutEnglish.Concat(Trained.HeldOutChinese).ToList();
        var fresh = XrayTokenizer.Load(Trained.Directory); // empty caches, so threads race to fill them
        var parallel = new int[texts.Count][];
        Parallel.For(0, texts.Count, new ParallelOptions { MaxDegreeOfParallelism = 4 }, i => parallel[i] = fresh.Encode(texts[i]));
        for (int i = 0; i < texts.Count; i++) Assert.Equal(Trained.Model.Encode(texts[i]), parallel[i]);
    }

    [Theory]
    [InlineData("en", 0.30)]
    [InlineData("zh", 0.25)]
    public void CompressesHeldOutCaptions(string lang, double maxTokensPerByte)
    {
        var captions = Trained.HeldOut(lang);
        double tokens = captions.Sum(c => Trained.Tokenizer.Encode(c).Length);
        double bytes = captions.Sum(c => Encoding.UTF8.GetByteCount(c));
        Assert.True(tokens / bytes < maxTokensPerByte, $"{lang}: {tokens / bytes:F3} tokens per byte");
    }

    [Fact]
    public void StreamingDecoderReproducesDecodeOfChineseOneIdAtATime()
    {
        var tok = Trained.Tokenizer;
        // Rare characters are not in the vocabulary: each is spelt by byte tokens, so characters arrive in pieces.
        var texts = Trained.HeldOutChinese.Take(40).Append("鼷鼱鼹。齉龘<|im_end|>心脏正常").ToList();
        bool heldBack = false;
        foreach (string text in texts)
        {
            foreach (bool skipSpecial in new[] { false, true })
            {
                int[] ids = tok.Encode(text);
                var stream = tok.CreateStreamingDecoder(skipSpecial);
                var streamed = new StringBuilder();
                foreach (int id in ids)
                {
                    string chunk = stream.Push(id);
                    Assert.DoesNotContain('\uFFFD', chunk);
                    heldBack |= chunk.Length == 0 && !tok.IsSpecial(id);
                    streamed.Append(chunk);
                }
                streamed.Append(stream.Flush());
                Assert.Equal(tok.Decode(ids, skipSpecial), streamed.ToString());
            }
        }
        Assert.True(heldBack, "no token ended inside a character, so holding back was never tested");
    }

    [Fact]
    public void StreamingDecoderFlushesAnUnfinishedCharacterAsReplacement()
    {
        var tok = Trained.Tokenizer;
        int[] ids = tok.Encode("鼷");
        Assert.True(ids.Length > 1);
        var stream = tok.CreateStreamingDecoder();
        Assert.Equal("", stream.Push(ids[0]));
        Assert.Equal("\uFFFD", stream.Flush());
        Assert.Equal("\uFFFD", tok.Decode(ids[..1]));
        Assert.Equal("", stream.Flush());
    }

    [Fact]
    public void HuggingFaceFilesDescribeTheSameTokenizer()
    {
        using var tokenizerJson = JsonDocument.Parse(File.ReadAllText(Path.Combine(Trained.Directory, "tokenizer.json")));
        var root = tokenizerJson.RootElement;
        var model = root.GetProperty("model");
        Assert.Equal("BPE", model.GetProperty("type").GetString());
        Assert.Equal(TrainedTokenizer.VocabSize, model.GetProperty("vocab").EnumerateObject().Count());
        Assert.Equal(Trained.Model.Merges.Count, model.GetProperty("merges").GetArrayLength());
        Assert.Equal(Trained.Tokenizer.IdOf("Ġheart"), model.GetProperty("vocab").GetProperty("Ġheart").GetInt32());
        var split = root.GetProperty("pre_tokenizer").GetProperty("pretokenizers")[0];
        Assert.Equal(ByteLevel.PreTokenizerPattern, split.GetProperty("pattern").GetProperty("Regex").GetString());
        Assert.Equal("ByteLevel", root.GetProperty("decoder").GetProperty("type").GetString());
        var added = root.GetProperty("added_tokens").EnumerateArray()
            .ToDictionary(a => a.GetProperty("content").GetString()!, a => (Id: a.GetProperty("id").GetInt32(), Special: a.GetProperty("special").GetBoolean()));
        Assert.Equal(SpecialTokens.All.Order(), added.Keys.Order());
        foreach (string special in SpecialTokens.All)
            Assert.Equal((Trained.Tokenizer.IdOf(special)!.Value, true), added[special]);

        using var config = JsonDocument.Parse(File.ReadAllText(Path.Combine(Trained.Directory, "tokenizer_config.json")));
        Assert.Equal(SpecialTokens.EndOfText, config.RootElement.GetProperty("eos_token").GetString());
        Assert.Equal(SpecialTokens.EndOfText, config.RootElement.GetProperty("pad_token").GetString());
        Assert.Equal(ChatTemplate.JinjaTemplate, config.RootElement.GetProperty("chat_template").GetString());
        Assert.Equal(SpecialTokens.Image, config.RootElement.GetProperty("added_tokens_decoder")
            .GetProperty(Trained.Tokenizer.ImageId.ToString()).GetProperty("content").GetString());

        string[] merges = File.ReadAllLines(Path.Combine(Trained.Directory, "merges.txt"));
        Assert.StartsWith("#version", merges[0]);
        Assert.Equal(Trained.Model.Merges.Count + 1, merges.Length);
    }

    [Fact]
    public void SaveThenLoadGivesIdenticalFilesAndIds()
    {
        string copy = TempDir.Create("xrayvl-tokenizer-copy");
        Trained.Tokenizer.Save(copy);
        foreach (string file in new[] { "vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json" })
            Assert.Equal(File.ReadAllBytes(Path.Combine(Trained.Directory, file)), File.ReadAllBytes(Path.Combine(copy, file)));
        var reloaded = XrayTokenizer.Load(copy);
        string text = Trained.HeldOutEnglish[0] + SpecialTokens.ImEnd + Trained.HeldOutChinese[0];
        Assert.Equal(Trained.Tokenizer.Encode(text), reloaded.Encode(text));
        Assert.Equal(Trained.Tokenizer.ImageId, reloaded.ImageId);
    }

    [Fact]
    public void TrainerMatchesANaiveRecountingTrainer()
    {
        var corpus = TrainedTokenizer.Captions("en").Take(150).Concat(TrainedTokenizer.Captions("zh").Take(150)).Select(c => c.Caption).ToList();
        var options = new BpeTrainerOptions(VocabSize: 900, MinFrequency: 3);
        var fast = BpeTrainer.Train(corpus, options);
        var naive = NaiveMerges(corpus, options.VocabSize - SpecialTokens.All.Count, options.MinFrequency);
        Assert.True(naive.Count > 300);
        Assert.Equal(naive, fast.Merges.ToList());
        Assert.Equal(fast.Merges, BpeTrainer.Train(corpus, options).Merges); // deterministic
    }

    /// <summary>
    /// Textbook BPE: recount every pair of every word after each merge; most frequent first, ties to the smaller
    /// (left id, right id); a merge whose string already exists reuses its id.
    /// </summary>
    private static List<(string, string)> NaiveMerges(IEnumerable<string> corpus, int targetTokens, int minFrequency)
    {
        var frequency = new Dictionary<string, int>();
        foreach (string text in corpus)
            foreach (var match in ByteLevel.PreTokenizer.Matches(text).Cast<System.Text.RegularExpressions.Match>())
                frequency[match.Value] = frequency.GetValueOrDefault(match.Value) + 1;
        var tokens = ByteLevel.BaseByteOrder.Select(b => ByteLevel.ByteToChar(b).ToString()).ToList();
        var words = frequency.Select(kv => (Symbols: Encoding.UTF8.GetBytes(kv.Key).Select(b => tokens.IndexOf(ByteLevel.ByteToChar(b).ToString())).ToList(), Count: kv.Value)).ToList();
        var merges = new List<(string, string)>();
        while (tokens.Count < targetTokens)
        {
            var counts = new Dictionary<(int, int), long>();
            foreach (var (symbols, count) in words)
                for (int i = 0; i + 1 < symbols.Count; i++)
                    counts[(symbols[i], symbols[i + 1])] = counts.GetValueOrDefault((symbols[i], symbols[i + 1])) + count;
            if (counts.Count == 0) break;
            var best = counts.OrderByDescending(kv => kv.Value).ThenBy(kv => kv.Key.Item1).ThenBy(kv => kv.Key.Item2).First();
            if (best.Value < minFrequency) break;
            var (left, right) = best.Key;
            string merged = tokens[left] + tokens[right];
            int mergedId = tokens.IndexOf(merged);
            if (mergedId < 0) { mergedId = tokens.Count; tokens.Add(merged); }
            merges.Add((tokens[left], tokens[right]));
            foreach (var (symbols, _) in words)
                for (int i = 0; i + 1 < symbols.Count; i++)
                    if (symbols[i] == left && symbols[i + 1] == right) { symbols[i] = mergedId; symbols.RemoveAt(i + 1); }
        }
        return merges;
    }

    [Fact]
    public void ByteAlphabetAndPreTokenizerFollowGpt2AndQwen2()
    {
        var chars = Enumerable.Range(0, 256).Select(b => ByteLevel.ByteToChar((byte)b)).ToList();
        Assert.Equal(256, chars.Distinct().Count());
        Assert.Equal('\u0120', ByteLevel.ByteToChar((byte)' ')); // "Ġ"
        Assert.Equal('\u010A', ByteLevel.ByteToChar((byte)'\n')); // "Ċ"
        Assert.Equal('A', ByteLevel.ByteToChar((byte)'A'));
        Assert.Equal((byte)'!', ByteLevel.BaseByteOrder[0]);
        Assert.Equal("æĺ¯", ByteLevel.EncodeText("是"));

        string[] Cut(string text) => ByteLevel.PreTokenizer.Matches(text).Select(m => m.Value).ToArray();
        // As Qwen2: one non-letter before a run of letters joins it, like the space before an English word.
        Assert.Equal(["心脏大小正常", "，肺部清晰", "。"], Cut("心脏大小正常，肺部清晰。"));
        Assert.Equal(["It", "'s", " x", "-ray", ":", " ", "1", "2", "3"], Cut("It's x-ray: 123"));
        Assert.Equal(["<", "1", "2", "><", "3", "4", ">"], Cut("<12><34>"));
        Assert.Equal(["根据X射线图像", "，"], Cut("根据X射线图像，"));
    }

    [Fact]
    public void BadInputGivesClearErrors()
    {
        Assert.Throws<XrayVLException>(() => BpeTrainer.Train(["a b"], new BpeTrainerOptions(VocabSize: 100)));
        Assert.Throws<XrayVLException>(() => XrayTokenizer.Load(Path.Combine(Path.GetTempPath(), "xrayvl-no-such-dir-" + Guid.NewGuid())));

        string empty = TempDir.Create("xrayvl-empty-tokenizer");
        var error = Assert.Throws<XrayVLException>(() => XrayTokenizer.Load(empty));
        Assert.Contains(empty, error.Message);

        string corrupt = TempDir.Create("xrayvl-corrupt-tokenizer");
        File.WriteAllText(Path.Combine(corrupt, "vocab.json"), "{\"a\": 0, ");
        File.WriteAllText(Path.Combine(corrupt, "merges.txt"), "#version: 0.2\n");
        Assert.Contains("vocab.json", Assert.Throws<XrayVLException>(() => XrayTokenizer.Load(corrupt)).Message);

        string badMerge = TempDir.Create("xrayvl-bad-merge-tokenizer");
        Trained.Model.Save(badMerge);
        File.AppendAllText(Path.Combine(badMerge, "merges.txt"), "Ġzzq Ġxxw\n");
        Assert.Contains("Ġzzq Ġxxw", Assert.Throws<XrayVLException>(() => XrayTokenizer.Load(badMerge)).Message);

        Assert.Throws<XrayVLException>(() => Trained.Tokenizer.Decode([TrainedTokenizer.VocabSize]));
    }

    [Fact]
    public void TrainingIgnoresSpecialTokensInTheCorpus()
    {
        var model = BpeTrainer.Train(Enumerable.Repeat("<image>\nnormal heart<|im_end|>", 50), new BpeTrainerOptions(VocabSize: 300, MinFrequency: 2));
        var tok = XrayTokenizer.FromModel(model);
        Assert.Equal([tok.ImageId], tok.Encode("<image>"));
        // No merge was learned across a special token's characters: "<image>" as text stays in small pieces.
        Assert.DoesNotContain(model.Merges, m => (m.Left + m.Right).Contains("im_end") || (m.Left + m.Right).Contains("image>"));
        Assert.NotNull(model.IdOf("Ġheart"));
    }
}
