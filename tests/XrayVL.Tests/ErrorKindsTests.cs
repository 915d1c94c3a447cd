using TorchSharp;
using XrayVL.Modeling;
using XrayVL.Server;
using XrayVL.Tests.Support;

namespace XrayVL.Tests;

/// <summary>User errors (the user can act: 400, "error: ...") and XrayVL's own bugs (500, "internal error ...") stay apart.</summary>
public class ErrorKindsTests
{
    [Fact]
    public void AnInternalInvariantIsABugNotAUserError()
    {
        using var model = TinyVisionLanguageModels.Create();
        using var embeds = torch.zeros(2, 5, model.Config.TextConfig.HiddenSize);
        // A cache of one row fed a batch of two: a caller inside XrayVL got it wrong, not the user.
        var e = Assert.ThrowsAny<Exception>(() => model.LanguageModel.Forward(embeds, null, model.LanguageModel.NewCache(1, 8)));
        Assert.IsType<XrayVLBugException>(e);
        Assert.False(e is XrayVLException);
    }

    [Fact]
    public void TheServerAnswersBugsWith500AndUserErrorsWith400()
    {
        var bug = ApiErrors.Describe(new XrayVLBugException("KV cache holds 1 rows but the input has 2"));
        Assert.Equal(500, bug.Status);
        Assert.Equal(ApiErrors.BugMessage, bug.Message);                   // the invariant's text stays in the log
        var user = ApiErrors.Describe(new XrayVLException("language 'fr' is not supported (en, zh)"));
        Assert.Equal(400, user.Status);
        Assert.Contains("'fr'", user.Message);
    }
}
