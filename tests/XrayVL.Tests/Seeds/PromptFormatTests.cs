using System.Text;
using XrayVL.Inference;
using XrayVL.Modeling;
using XrayVL.Text;

namespace XrayVL.Tests.Seeds;

/// <summary>Prompt formats as data: file round trip, refusals, stop strings; the EVA vision configs that name the seeds' parts.</summary>
public sealed class PromptFormatTests
{
    private static XrayTokenizer Llama() => XrayTokenizer.Load(SeedFixture.Seed("minigpt_med", "llama-2-7b-chat-hf"));

    [Fact]
    public void FormatsRoundTripThroughTheirFileAndRefuseWhatTheyCannotRender()
    {
        using var temp = new Support.TempDir("xrayvl-format");
        PromptFormat.XrayGpt.Save(temp.Path);
        var read = PromptFormat.ReadIfPresent(temp.Path)!;
        Assert.Equal(PromptFormat.XrayGpt.System, read.System);
        Assert.Equal(PromptFormat.XrayGpt.StopTokenIds, read.StopTokenIds);
        Assert.Null(PromptFormat.ReadIfPresent(Path.Combine(temp.Path, "none")));
        temp.Write(PromptFormat.FileName, "{\"name\": \"x\", \"image_text\": \"<Img></Img>\"}");
        Assert.Contains("image_text must hold <ImageHere> exactly once", Assert.Throws<XrayVLException>(() => PromptFormat.ReadIfPresent(temp.Path)).Message);
        Assert.Throws<XrayVLException>(() => PromptFormat.Named("vicuna_v1"));

        var tokenizer = Llama();
        tokenizer.UsePromptFormat(PromptFormat.XrayGpt);
        Assert.Equal(0, tokenizer.ImageId);
        // A typed placeholder cannot forge an image slot; a training rendering is refused, not silently unmasked.
        Assert.Throws<XrayVLException>(() => ChatTemplate.Render(new Conversation().User("see <ImageHere>", 1), tokenizer, true));
        Assert.Throws<XrayVLException>(() => ChatTemplate.Render(new Conversation().User("<unk>", 1), tokenizer, true));
        Assert.Contains("inference only", Assert.Throws<XrayVLException>(() =>
            ChatTemplate.Render(new Conversation().User("q", 1).Assistant("a"), tokenizer, false)).Message);
        tokenizer.UsePromptFormat(null);
        Assert.Null(tokenizer.PromptFormat);
        Assert.NotEqual(0, tokenizer.ImageId);                             // back to the project's <image>
    }

    [Fact]
    public void SeedFormatsStopAtTheirStopIdsAndCutAtTheirStopStrings()
    {
        var tokenizer = Llama();
        tokenizer.UsePromptFormat(PromptFormat.XrayGpt);
        var stops = InferencePipeline.Decoding(tokenizer).StopTokenIds;
        Assert.Contains(835, stops);                                       // "###"
        Assert.Contains(2, stops);                                         // </s>
        Assert.Equal("The heart is normal.", PromptFormat.XrayGpt.CutAnswer(" The heart is normal.###Patient: more"));
        var answer = new StringBuilder("lungs clear.#");
        Assert.Equal(1, StopStrings.PartialAtEnd(answer, ["###"]));        // "#" might begin "###": held back
        Assert.Null(StopStrings.First(answer, ["###"]));
        answer.Append("##");
        Assert.Equal(12, StopStrings.First(answer, ["###"]));
    }

    [Fact]
    public void EvaVisionConfigsNameTheirParts()
    {
        var qformer = new QFormerConfig { HiddenSize = 64, NumHiddenLayers = 2, NumAttentionHeads = 4, IntermediateSize = 128, EncoderWidth = 64, NumQueryTokens = 4 };
        var eva = new VisionConfig { ModelType = "eva_vit_g_qformer", ImageSize = 56, PatchSize = 14, NumChannels = 3, HiddenSize = 64, IntermediateSize = 279,
            NumHiddenLayers = 2, NumAttentionHeads = 4, LayerNormEps = 1e-6, QformerConfig = qformer };
        using (var tower = VisionEncoder.Create(eva, -1, "full"))
        {
            Assert.IsType<EvaVisionEncoder>(tower);
            Assert.Equal((64, 4), (tower.OutputDim, tower.NumTokens));
            Assert.Contains("Qformer.bert.encoder.layer.0.crossattention.self.key.weight", tower.state_dict().Keys);
            Assert.Throws<XrayVLException>(() => VisionEncoder.Create(eva, -2, "full"));  // only the last block feeds on
        }
        Assert.Contains("needs qformer_config", Assert.Throws<XrayVLException>(() => (eva with { QformerConfig = null }).Validate()).Message);
        Assert.Contains("belongs to eva_vit_g_qformer", Assert.Throws<XrayVLException>(() => (eva with { ModelType = "eva_vit_g" }).Validate()).Message);
        using var plain = VisionEncoder.Create(eva with { ModelType = "eva_vit_g", QformerConfig = null, ImageSize = 112 });
        Assert.Equal((64, 64), (plain.OutputDim, plain.NumTokens));         // 8×8 patches, CLS dropped
        Assert.Contains("eva_vit_g_qformer", Assert.Throws<XrayVLException>(() => (eva with { ModelType = "eva_clip" }).Validate()).Message);
    }
}
