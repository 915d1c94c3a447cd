namespace XrayVL;

/// <summary>Named constants shared by the model, the loss and the chat template (one place each).</summary>
public static class Constants
{
    /// <summary>Label of a position that does not count in the loss (prompt, image, padding); PyTorch's and HF's -100.</summary>
    public const int IgnoreIndex = -100;

    /// <summary>What every report says of itself, in the report's language ("en" or "zh").</summary>
    public static string Disclaimer(string language) => language == "zh"
        ? "科研工具，不是医疗器械：不可用于临床诊断。"
        : "Research tool, not a medical device: not for clinical diagnosis.";
}
