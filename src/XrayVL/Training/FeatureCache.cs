using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using TorchSharp;
using XrayVL.Imaging;
using XrayVL.IO;
using XrayVL.Modeling;
using static TorchSharp.torch;

namespace XrayVL.Training;

/// <summary>
/// Vision features of a frozen encoder, computed once per image and reused across epochs, stages and runs.
/// Each image's features (Ntok, Dv) in float32 live in their own safetensors file under
/// <c>DIR/&lt;encoder key&gt;/&lt;image key&gt;.safetensors</c>, where the encoder key hashes the encoder's weights, config,
/// feature layer and the preprocessing, and the image key hashes the file's full path, size and modification time:
/// retraining the encoder or touching an image file makes a new entry instead of reusing a stale one.
/// Recently used features are also kept in memory (up to <see cref="MaxInMemory"/> images).
/// </summary>
/// <remarks>
/// Cached features are the un-augmented image's: a stage that augments images cannot use the cache (the trainer then
/// encodes every batch), and a stage that trains the encoder never does.
/// </remarks>
public sealed class FeatureCache : IDisposable
{
    private readonly VisionEncoder encoder;
    private readonly PreprocessConfig preprocess;
    private readonly string folder;
    private readonly Dictionary<string, Tensor> memory = new(StringComparer.Ordinal);
    private readonly LinkedList<string> recency = new();

    /// <param name="directory">The cache root (OUT/feature-cache by default); shared by every encoder.</param>
    /// <param name="encoder">The frozen encoder; its weights must not change while the cache is used.</param>
    public FeatureCache(string directory, VisionEncoder encoder, PreprocessConfig preprocess, int maxInMemory = 2048)
    {
        this.encoder = encoder;
        this.preprocess = preprocess;
        MaxInMemory = maxInMemory;
        EncoderKey = KeyOf(encoder, preprocess);
        folder = Path.Combine(Path.GetFullPath(directory), EncoderKey);
        Directory.CreateDirectory(folder);
    }

    /// <summary>Hash of the encoder's weights, config and feature selection and of the preprocessing (16 hex digits).</summary>
    public string EncoderKey { get; }
    public int MaxInMemory { get; }
    /// <summary>Images whose features the encoder computed (cache misses).</summary>
    public int EncoderImages { get; private set; }
    /// <summary>Images served from memory or disk.</summary>
    public int Hits { get; private set; }
    /// <summary>Images read back from disk (a subset of <see cref="Hits"/>).</summary>
    public int DiskReads { get; private set; }

    /// <summary>
    /// Features (N, Ntok, Dv) float32 on the CPU for the images, in order; missing ones are encoded together in one batch
    /// (no gradients) and written to disk before returning. The caller disposes the result.
    /// </summary>
    public Tensor Get(IReadOnlyList<string> imagePaths)
    {
        using var scope = NewDisposeScope();
        var keys = imagePaths.Select(ImageKey).ToArray();
        var found = new Tensor?[keys.Length];
        var missing = new List<int>();
        for (int i = 0; i < keys.Length; i++)
        {
            found[i] = Lookup(keys[i]);
            if (found[i] is null) missing.Add(i);
            else Hits++;
        }
        if (missing.Count > 0)
        {
            // Several slots may name the same image; encode each distinct one once.
            var distinct = missing.Select(i => imagePaths[i]).Distinct(StringComparer.Ordinal).ToList();
            Tensor features;
            using (no_grad())
            {
                var pixels = Preprocess.Batch(distinct.Select(p => ImageFile.Load(p)), preprocess)
                    .to(encoder.parameters().First().device);
                features = encoder.call(pixels).to(ScalarType.Float32).cpu();   // (M, Ntok, Dv)
            }
            EncoderImages += distinct.Count;
            for (int j = 0; j < distinct.Count; j++)
            {
                string key = ImageKey(distinct[j]);
                var one = features[j].contiguous();
                Write(key, distinct[j], one);
                Remember(key, one.clone().DetachFromDisposeScope());
            }
            foreach (int i in missing) found[i] = memory[keys[i]];
        }
        return torch.stack(found!).MoveToOuterDisposeScope();
    }

    /// <summary>The entry file name of an image: a hash of its full path, size and modification time.</summary>
    public string ImageKey(string imagePath)
    {
        var info = new FileInfo(imagePath);
        if (!info.Exists) throw new XrayVLException($"{imagePath}: image not found");
        string identity = $"{info.FullName}\n{info.Length}\n{info.LastWriteTimeUtc.Ticks}";
        return Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(identity)))[..32];
    }

    /// <summary>Hash of everything that decides an encoder's features: weights, config, feature layer, strategy, preprocessing.</summary>
    public static string KeyOf(VisionEncoder encoder, PreprocessConfig preprocess)
    {
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        hash.AppendData(JsonSerializer.SerializeToUtf8Bytes(encoder.Config, Json.Line));
        hash.AppendData(JsonSerializer.SerializeToUtf8Bytes(preprocess, Json.Line));
        hash.AppendData(Encoding.UTF8.GetBytes($"{encoder.HiddenStateIndex}/{encoder.SelectStrategy}"));
        foreach (var (name, tensor) in encoder.state_dict().OrderBy(kv => kv.Key, StringComparer.Ordinal))
        {
            hash.AppendData(Encoding.UTF8.GetBytes(name));
            using var scope = NewDisposeScope();
            hash.AppendData(tensor.detach().cpu().contiguous().bytes);
        }
        return Convert.ToHexStringLower(hash.GetHashAndReset())[..16];
    }

    private Tensor? Lookup(string key)
    {
        if (memory.TryGetValue(key, out var cached))
        {
            recency.Remove(key);
            recency.AddFirst(key);
            return cached;
        }
        string file = Path.Combine(folder, key + ".safetensors");
        if (!File.Exists(file)) return null;
        Dictionary<string, Tensor> loaded;
        try { loaded = SafeTensors.Load(file); }
        catch (XrayVLException)
        {
            File.Delete(file);   // a damaged entry (e.g. a crash mid-write on a file system without atomic rename) is recomputed
            return null;
        }
        if (!loaded.Remove("features", out var features))
        {
            foreach (var t in loaded.Values) t.Dispose();
            File.Delete(file);
            return null;
        }
        foreach (var t in loaded.Values) t.Dispose();
        DiskReads++;
        features.DetachFromDisposeScope();     // owned by the cache from now on
        Remember(key, features);
        return features;
    }

    private void Remember(string key, Tensor features)
    {
        memory[key] = features;
        recency.AddFirst(key);
        while (memory.Count > MaxInMemory && recency.Last is { } oldest)
        {
            recency.RemoveLast();
            if (memory.Remove(oldest.Value, out var evicted)) evicted.Dispose();
        }
    }

    private void Write(string key, string imagePath, Tensor features) =>
        SafeTensors.Save(Path.Combine(folder, key + ".safetensors"), new Dictionary<string, Tensor> { ["features"] = features },
            new Dictionary<string, string> { ["image"] = Path.GetFullPath(imagePath), ["encoder"] = EncoderKey });

    public void Dispose()
    {
        foreach (var t in memory.Values) t.Dispose();
        memory.Clear();
        recency.Clear();
    }
}
