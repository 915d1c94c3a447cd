namespace XrayVL.Inference;

/// <summary>The languages the templates, prompts and labeler speak.</summary>
public static class Languages
{
    public static string Check(string language) => language switch
    {
        "en" or "zh" => language,
        _ => throw new XrayVLException($"language '{language}' is not supported (en, zh)"),
    };
}
