using TorchSharp;
using XrayVL.Modeling;
using XrayVL.Tests.Support;
using static TorchSharp.torch;

namespace XrayVL.Tests.Modeling;

public class VisionLanguageModelTests
{
    private const int I = TinyVisionLanguageModels.ImageToken;

    [Fact]
    public void StateDictFollowsTheHfLlavaLayout()
    {
        using var model = TinyVisionLanguageModels.Create();
        var keys = model.state_dict().Keys.ToList();
        Assert.Contains("vision_tower.vision_model.embeddings.patch_embedding.weight", keys);
        Assert.Contains("vision_tower.vision_model.encoder.layers.1.self_attn.q_proj.weight", keys);
        Assert.Contains("multi_modal_projector.linear_1.weight", keys);
        Assert.Contains("multi_modal_projector.linear_2.bias", keys);
        Assert.Contains("language_model.model.embed_tokens.weight", keys);
        Assert.Contains("language_model.model.layers.0.self_attn.o_proj.weight", keys);
        Assert.Contains("language_model.model.norm.weight", keys);
        Assert.All(keys, k => Assert.Matches("^(vision_tower|multi_modal_projector|language_model)\\.", k));
        Assert.Equal(16, model.TokensPerImage);                      // (32 / 8)² patches, CLS dropped
        Assert.Equal(4, TinyVisionLanguageModels.Create(TinyVisionLanguageModels.Config("merge4")).TokensPerImage);
    }

    [Fact]
    public void ImageEmbeddingsLandAtThePlaceholderPositionsInReadingOrder()
    {
        using var model = TinyVisionLanguageModels.Create();
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        int n = model.TokensPerImage;
        // Two images in the first row (frontal + lateral), none in the second.
        var row0 = new List<long> { 5, 6 }.Concat(Enumerable.Repeat((long)I, n)).Concat(Enumerable.Repeat((long)I, n)).Concat([7L]).ToArray();
        var row1 = Enumerable.Range(10, row0.Length).Select(x => (long)x).ToArray();
        var ids = stack([tensor(row0), tensor(row1)]);                               // (2, T)
        var pixels = randn(2, 1, 32, 32);
        var imageEmbeds = model.EncodeImages(pixels);                                // (2, n, D)
        var embeds = model.Embed(ids, imageEmbeds);                                  // (2, T, D)
        var tokenEmbeds = model.LanguageModel.Embed(ids);

        Assert.True(embeds[0, 2..(2 + n)].allclose(imageEmbeds[0]));
        Assert.True(embeds[0, (2 + n)..(2 + 2 * n)].allclose(imageEmbeds[1]));
        Assert.True(embeds[0, ..2].allclose(tokenEmbeds[0, ..2]));
        Assert.True(embeds[0, -1].allclose(tokenEmbeds[0, -1]));
        Assert.True(embeds[1].allclose(tokenEmbeds[1]));
    }

    [Fact]
    public void ImageCountMismatchIsAClearError()
    {
        using var model = TinyVisionLanguageModels.Create();
        using var scope = NewDisposeScope();
        var ids = tensor(new long[] { 1, I, 2 }).unsqueeze(0);                       // one position, not a whole image
        var e = Assert.Throws<XrayVLException>(() => model.Embed(ids, model.EncodeImages(randn(1, 1, 32, 32))));
        Assert.Contains("image positions", e.Message);
        Assert.Throws<XrayVLException>(() => model.Embed(ids, null));
    }

    [Fact]
    public void PlaceholdersExpandToOneIgnoredPositionPerImageToken()
    {
        var (ids, labels) = VisionLanguageModel.ExpandImagePlaceholders([1, I, 2, I, 3], [-100, -100, 2, -100, 3], I, 3);
        Assert.Equal([1, I, I, I, 2, I, I, I, 3], ids);
        Assert.Equal([-100, -100, -100, -100, 2, -100, -100, -100, 3], labels);
    }

    [Fact]
    public void LossTrainsProjectorFromAnswerTokensAndImagesChangeTheAnswer()
    {
        using var model = TinyVisionLanguageModels.Create();
        model.train();
        using var scope = NewDisposeScope();
        int n = model.TokensPerImage;
        var ids = tensor(new long[] { 3 }.Concat(Enumerable.Repeat((long)I, n)).Concat([4L, 5L, 6L]).ToArray()).unsqueeze(0);
        var labels = tensor(Enumerable.Repeat(-100L, n + 2).Concat([5L, 6L]).ToArray()).unsqueeze(0);
        var pixels = randn(1, 1, 32, 32);
        var loss = model.Loss(ids, labels, model.EncodeImages(pixels));
        loss.backward();
        var projectorGrad = model.Projector.parameters().First().grad;
        Assert.NotNull(projectorGrad);
        Assert.True(projectorGrad!.abs().sum().item<float>() > 0, "the projector receives gradient through the spliced image");

        model.eval();
        using var noGrad = no_grad();
        var a = model.Forward(ids, model.EncodeImages(pixels));
        var b = model.Forward(ids, model.EncodeImages(randn(1, 1, 32, 32)));
        Assert.True((a[0, -1] - b[0, -1]).abs().max().item<float>() > 1e-6, "a different image changes the next-token logits");
        Assert.True(a[0, 0].allclose(b[0, 0]), "positions before the image cannot see it (causal)");
    }
}
