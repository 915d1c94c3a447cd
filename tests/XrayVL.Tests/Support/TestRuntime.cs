using System.Runtime.CompilerServices;

namespace XrayVL.Tests.Support;

internal static class TestRuntime
{
    /// <summary>Runs before any test touches torch: the same process settings as the CLI.</summary>
    [ModuleInitializer]
    internal static void Initialize() => TorchRuntime.Configure();
}
