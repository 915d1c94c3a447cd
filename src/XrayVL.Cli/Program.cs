using XrayVL.Cli;

// `xrayvl`: one entry point, one file per command (Commands/*.cs).
XrayVL.TorchRuntime.Configure();   // before the first tensor: libtorch reads its threading settings once
return await App.RunAsync(args, Console.Out, Console.Error, Console.In);
