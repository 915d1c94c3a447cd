using System.Collections.Concurrent;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using XrayVL.IO;

namespace XrayVL.Text;

/// <summary>
/// A byte-level BPE vocabulary and its merges, as <see cref="BpeTrainer"/> makes them and as GPT-2/Qwen2 folders hold
/// them (vocab.json + merges.txt, special tokens from tokenizer_config.json). It reads and writes those files, and
/// carries a plain reference encoder (lowest-rank pair first, as GPT-2's) against which the library tokenizer that
/// <see cref="XrayTokenizer"/> uses is cross-checked.
/// </summary>
public sealed class ByteLevelBpeModel
{
    public const string VocabFile = "vocab.json";
    public const string MergesFile = "merges.txt";
    public const string MergesHeader = "#version: 0.2";

    private readonly string[] tokens;
    private readonly Dictionary<string, int> tokenIds;
    private readonly byte[][] tokenBytes;
    private readonly bool[] isSpecial;
    private readonly string[] specials;
    private readonly int[] baseIdOfByte = new int[256];
    private readonly Dictionary<long, (int Rank, int Result)> mergeTable;
    private readonly ConcurrentDictionary<string, int[]> wordCache = new(StringComparer.Ordinal);

    /// <param name="tokens">Token spelling by id: byte-level alphabet for ordinary tokens, literal text for special tokens.</param>
    /// <param name="merges">Merge rules in rank order; each result must be in <paramref name="tokens"/>.</param>
    /// <param name="specialTokens">Tokens matched whole in text; each must be in <paramref name="tokens"/>.</param>
    /// <param name="source">Names the files in error messages.</param>
    public ByteLevelBpeModel(IReadOnlyList<string> tokens, IReadOnlyList<(string Left, string Right)> merges,
        IEnumerable<string> specialTokens, string source = "BPE model")
    {
        this.tokens = [.. tokens];
        tokenIds = new Dictionary<string, int>(this.tokens.Length, StringComparer.Ordinal);
        for (int id = 0; id < this.tokens.Length; id++)
            if (!tokenIds.TryAdd(this.tokens[id], id))
                throw new XrayVLException($"{source}: token '{this.tokens[id]}' appears twice (ids {tokenIds[this.tokens[id]]} and {id}).");

        specials = [.. specialTokens.Distinct()];
        isSpecial = new bool[this.tokens.Length];
        foreach (string special in specials)
        {
            if (!tokenIds.TryGetValue(special, out int id))
                throw new XrayVLException($"{source}: special token '{special}' has no id.");
            isSpecial[id] = true;
        }

        tokenBytes = new byte[this.tokens.Length][];
        var buffer = new List<byte>();
        for (int id = 0; id < this.tokens.Length; id++)
        {
            if (isSpecial[id]) { tokenBytes[id] = Encoding.UTF8.GetBytes(this.tokens[id]); continue; }
            buffer.Clear();
            if (!ByteLevel.TryDecode(this.tokens[id], buffer))
                throw new XrayVLException($"{source}: token '{this.tokens[id]}' (id {id}) is not spelt in the byte-level alphabet.");
            tokenBytes[id] = [.. buffer];
        }

        for (int b = 0; b < 256; b++)
        {
            if (!tokenIds.TryGetValue(ByteLevel.ByteToChar((byte)b).ToString(), out baseIdOfByte[b]))
                throw new XrayVLException($"{source}: no token for byte 0x{b:X2}; a byte-level vocabulary needs all 256.");
        }

        Merges = [.. merges];
        mergeTable = new Dictionary<long, (int, int)>(merges.Count);
        for (int rank = 0; rank < merges.Count; rank++)
        {
            var (left, right) = merges[rank];
            if (!tokenIds.TryGetValue(left, out int leftId) || !tokenIds.TryGetValue(right, out int rightId)
                || !tokenIds.TryGetValue(left + right, out int resultId))
                throw new XrayVLException($"{source}: merge {rank + 1} '{left} {right}' uses a token that is not in the vocabulary.");
            mergeTable.TryAdd(BpeTrainer.Pack(leftId, rightId), (rank, resultId)); // a repeated rule keeps its first rank
        }
    }

    /// <summary>Token spellings by id (specials as their literal text).</summary>
    public IReadOnlyList<string> Tokens => tokens;

    /// <summary>Merge rules, highest priority first.</summary>
    public IReadOnlyList<(string Left, string Right)> Merges { get; }

    /// <summary>Tokens matched whole in text.</summary>
    public IReadOnlyList<string> Specials => specials;

    public int VocabSize => tokens.Length;

    public int? IdOf(string token) => tokenIds.TryGetValue(token, out int id) ? id : null;

    public bool IsSpecial(int id) => (uint)id < (uint)isSpecial.Length && isSpecial[id];

    /// <summary>The bytes a token stands for (a special token's UTF-8 text).</summary>
    public ReadOnlySpan<byte> TokenBytes(int id)
    {
        if ((uint)id >= (uint)tokenBytes.Length)
            throw new XrayVLException($"Token id {id} is outside the vocabulary (size {tokenBytes.Length}).");
        return tokenBytes[id];
    }

    /// <summary>Reference encoder: specials → their ids; other text → pre-tokens → GPT-2 BPE (lowest-rank pair first).</summary>
    public int[] Encode(string text)
    {
        var ids = new List<int>();
        foreach (var (segment, special) in SpecialTokenSplitter.Split(text, specials))
        {
            if (special) { ids.Add(tokenIds[segment]); continue; }
            foreach (var match in ByteLevel.PreTokenizer.EnumerateMatches(segment))
                ids.AddRange(EncodeWord(segment.Substring(match.Index, match.Length)));
        }
        return [.. ids];
    }

    private int[] EncodeWord(string word)
    {
        if (wordCache.TryGetValue(word, out int[]? cached)) return cached;
        byte[] bytes = Encoding.UTF8.GetBytes(word);
        var symbols = new List<int>(bytes.Length);
        foreach (byte b in bytes) symbols.Add(baseIdOfByte[b]);
        while (symbols.Count > 1)
        {
            int bestRank = int.MaxValue, bestLeft = -1, bestRight = -1, bestResult = -1;
            for (int i = 0; i + 1 < symbols.Count; i++)
            {
                if (mergeTable.TryGetValue(BpeTrainer.Pack(symbols[i], symbols[i + 1]), out var merge) && merge.Rank < bestRank)
                    (bestRank, bestLeft, bestRight, bestResult) = (merge.Rank, symbols[i], symbols[i + 1], merge.Result);
            }
            if (bestLeft < 0) break;
            int write = 0;
            for (int read = 0; read < symbols.Count; read++)
            {
                if (read + 1 < symbols.Count && symbols[read] == bestLeft && symbols[read + 1] == bestRight)
                {
                    symbols[write++] = bestResult;
                    read++;
                }
                else symbols[write++] = symbols[read];
            }
            symbols.RemoveRange(write, symbols.Count - write);
        }
        int[] result = [.. symbols];
        if (wordCache.Count < 200_000) wordCache.TryAdd(word, result); // bounded: a server sees unbounded text
        return result;
    }

    /// <summary>
    /// Writes vocab.json + merges.txt (GPT-2 layout, which Microsoft.ML.Tokenizers loads) and tokenizer.json +
    /// tokenizer_config.json (Hugging Face), so either library can load the folder.
    /// </summary>
    public void Save(string directory)
    {
        Directory.CreateDirectory(directory);

        var vocab = new JsonObject();
        for (int id = 0; id < tokens.Length; id++) vocab[tokens[id]] = id;
        AtomicFile.WriteAllText(Path.Combine(directory, VocabFile), vocab.ToJsonString(Json.Line));

        var merges = new StringBuilder(MergesHeader).Append('\n');
        foreach (var (left, right) in Merges) merges.Append(left).Append(' ').Append(right).Append('\n');
        AtomicFile.WriteAllText(Path.Combine(directory, MergesFile), merges.ToString());

        var added = specials.Select(s => (Id: tokenIds[s], Content: s)).OrderBy(a => a.Id).ToList();
        AtomicFile.WriteAllText(Path.Combine(directory, HfFiles.TokenizerJson), HfTokenizerJson(added).ToJsonString(Json.Options));
        HfFiles.WriteTokenizerConfig(directory, added, tokenizerClass: "PreTrainedTokenizerFast",
            eosToken: SpecialTokens.EndOfText, padToken: SpecialTokens.EndOfText);
    }

    private JsonObject HfTokenizerJson(IReadOnlyList<(int Id, string Content)> added)
    {
        JsonObject ByteLevelStep() => new()
        {
            ["type"] = "ByteLevel", ["add_prefix_space"] = false, ["trim_offsets"] = false, ["use_regex"] = false,
        };
        var vocab = new JsonObject();
        for (int id = 0; id < tokens.Length; id++) vocab[tokens[id]] = id;
        var merges = new JsonArray();
        foreach (var (left, right) in Merges) merges.Add(left + " " + right);
        return new JsonObject
        {
            ["version"] = "1.0",
            ["truncation"] = null,
            ["padding"] = null,
            ["added_tokens"] = new JsonArray([.. added.Select(a => (JsonNode)HfFiles.AddedToken(a.Id, a.Content))]),
            ["normalizer"] = null,
            ["pre_tokenizer"] = new JsonObject
            {
                ["type"] = "Sequence",
                ["pretokenizers"] = new JsonArray(
                    new JsonObject
                    {
                        ["type"] = "Split",
                        ["pattern"] = new JsonObject { ["Regex"] = ByteLevel.PreTokenizerPattern },
                        ["behavior"] = "Isolated",
                        ["invert"] = false,
                    },
                    ByteLevelStep()),
            },
            ["post_processor"] = ByteLevelStep(),
            ["decoder"] = ByteLevelStep(),
            ["model"] = new JsonObject
            {
                ["type"] = "BPE",
                ["dropout"] = null,
                ["unk_token"] = null,
                ["continuing_subword_prefix"] = "",
                ["end_of_word_suffix"] = "",
                ["fuse_unk"] = false,
                ["byte_fallback"] = false,
                ["ignore_merges"] = false,
                ["vocab"] = vocab,
                ["merges"] = merges,
            },
        };
    }

    /// <summary>
    /// Reads vocab.json + merges.txt from <paramref name="directory"/>. Special tokens are those of
    /// tokenizer_config.json's added_tokens_decoder (ids after vocab.json's, as in Qwen2 folders, are appended) plus
    /// those of <see cref="SpecialTokens.All"/> found in vocab.json; required ones still missing get the next ids.
    /// </summary>
    public static ByteLevelBpeModel Load(string directory)
    {
        string vocabPath = Path.Combine(directory, VocabFile);
        string mergesPath = Path.Combine(directory, MergesFile);
        var byId = new SortedDictionary<int, string>();
        using (var doc = Json.ReadDocument(vocabPath, "vocabulary"))
        {
            if (doc.RootElement.ValueKind != JsonValueKind.Object) throw new XrayVLException($"{vocabPath}: expected a JSON object of token → id.");
            foreach (var entry in doc.RootElement.EnumerateObject())
            {
                if (entry.Value.ValueKind != JsonValueKind.Number || !entry.Value.TryGetInt32(out int id) || id < 0)
                    throw new XrayVLException($"{vocabPath}: token '{entry.Name}' has no valid id.");
                if (!byId.TryAdd(id, entry.Name))
                    throw new XrayVLException($"{vocabPath}: id {id} is given to both '{byId[id]}' and '{entry.Name}'.");
            }
        }

        var specials = new List<string>();
        foreach (var (id, content) in HfFiles.ReadAddedTokens(directory))
        {
            if (byId.TryGetValue(id, out string? existing) && existing != content)
                throw new XrayVLException($"{Path.Combine(directory, HfFiles.TokenizerConfigJson)}: added token '{content}' has id {id}, which vocab.json gives to '{existing}'.");
            byId[id] = content;
            specials.Add(content);
        }
        var tokens = new List<string>(byId.Count);
        foreach (var (id, token) in byId)
        {
            if (id != tokens.Count)
                throw new XrayVLException($"{vocabPath}: ids must be 0..N-1 without gaps; id {tokens.Count} is missing.");
            tokens.Add(token);
        }
        foreach (string required in SpecialTokens.All)
        {
            if (!tokens.Contains(required)) tokens.Add(required);
            if (!specials.Contains(required)) specials.Add(required);
        }

        var merges = new List<(string, string)>();
        string[] lines;
        try { lines = File.ReadAllLines(mergesPath, Encoding.UTF8); }
        catch (IOException e) { throw new XrayVLException($"{mergesPath}: cannot be read ({e.Message}).", e); }
        for (int i = 0; i < lines.Length; i++)
        {
            string line = lines[i];
            if (line.Length == 0 || (i == 0 && line.StartsWith("#version", StringComparison.Ordinal))) continue;
            string[] parts = line.Split(' ');
            if (parts.Length != 2 || parts[0].Length == 0 || parts[1].Length == 0)
                throw new XrayVLException($"{mergesPath}: line {i + 1} is not 'left right': '{line}'.");
            merges.Add((parts[0], parts[1]));
        }
        return new ByteLevelBpeModel(tokens, merges, specials, source: directory);
    }
}
