namespace XrayVL;

/// <summary>Named constants shared by the model, the loss and the chat template (one place each).</summary>
public static class Constants
{
    /// <summary>Label of a position that does not count in the loss (prompt, image, padding); PyTorch's and HF's -100.</summary>
    public const int IgnoreIndex = -100;
}
