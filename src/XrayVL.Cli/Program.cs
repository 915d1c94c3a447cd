Console.WriteLine(XrayVL.Probe.Run());
