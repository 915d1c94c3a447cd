using XrayVL.Cli;

// `xrayvl`: one entry point, one file per command (Commands/*.cs).
return await App.RunAsync(args, Console.Out, Console.Error, Console.In);
