using TorchSharp;
using TorchSharp.Modules;
using XrayVL.Modeling;
using static TorchSharp.torch;

namespace XrayVL.Training;

/// <summary>
/// Mixed precision without autocast (TorchSharp has none for CPU bf16): the float32 <see cref="Master"/> model holds the
/// weights AdamW updates and checkpoints save; forward and backward run in <see cref="Model"/>, a bfloat16 copy.
/// After each backward pass the copy's gradients are added, in float32, into the master's gradients (so accumulation
/// over micro-batches never rounds to bf16); after each optimizer step the trained weights are copied back, rounded.
/// LoRA adapters stay float32 in the copy too (<see cref="AdaptableLinear"/> keeps them so under a bf16 base).
/// With float32 compute the copy is the master itself and every method here is a no-op.
/// </summary>
public sealed class ComputeCopy : IDisposable
{
    private readonly List<(string Name, Parameter Master, Parameter Compute)> trainable = [];
    private readonly List<(Tensor Master, Tensor Compute)> buffers = [];

    public VisionLanguageModel Master { get; }
    public VisionLanguageModel Model { get; }
    public bool IsCopy => !ReferenceEquals(Master, Model);
    public ScalarType DType { get; }

    /// <summary>
    /// Builds the compute model for <paramref name="master"/>, whose trainable parameters (requires_grad) and LoRA
    /// adapters (<paramref name="lora"/>, already injected into master.LanguageModel) are set for the stage.
    /// </summary>
    public ComputeCopy(VisionLanguageModel master, ScalarType dtype, LoraConfig? lora)
    {
        Master = master;
        DType = dtype;
        if (dtype == ScalarType.Float32)
        {
            Model = master;
        }
        else
        {
            var device = master.LanguageModel.Device;
            Model = new VisionLanguageModel(master.Config);
            Model.to(device);
            Model.to(dtype);
            if (lora is not null)
            {
                Lora.Inject(Model.LanguageModel, lora);
                Model.to(dtype);   // adapters in bf16 too: the float32 master keeps updates exact, and no casts per layer
            }
            var computeParameters = Model.named_parameters().ToDictionary(p => p.name, p => p.parameter);
            foreach (var (name, p) in master.named_parameters())
            {
                var c = computeParameters[name];
                c.requires_grad = p.requires_grad;
                if (p.requires_grad) trainable.Add((name, p, c));
            }
            var computeBuffers = Model.named_buffers().ToDictionary(b => b.name, b => b.buffer);
            foreach (var (name, b) in master.named_buffers()) buffers.Add((b, computeBuffers[name]));
            CopyAllFromMaster();
        }
    }

    /// <summary>Every weight and buffer master → copy (rounded to the compute dtype; LoRA adapters stay float32).</summary>
    public void CopyAllFromMaster()
    {
        if (!IsCopy) return;
        using var _ = no_grad();
        var target = Model.state_dict();
        foreach (var (name, tensor) in Master.state_dict()) target[name].copy_(tensor);
    }

    /// <summary>After an optimizer step: trained weights master → copy; running statistics (BatchNorm) copy → master.</summary>
    public void AfterStep()
    {
        if (!IsCopy) return;
        using var _ = no_grad();
        foreach (var (_, m, c) in trainable) c.copy_(m);
        foreach (var (m, c) in buffers)
            if (m.is_floating_point()) m.copy_(c);
    }

    /// <summary>After a backward pass: adds the copy's gradients (in float32) into the master's and clears the copy's.</summary>
    public void MoveGradientsToMaster()
    {
        if (!IsCopy) return;
        using var _ = no_grad();
        foreach (var (_, m, c) in trainable)
        {
            var g = c.grad;
            if (g is null) continue;
            var mg = m.grad;
            if (mg is null) m.grad = g.to(ScalarType.Float32, copy: true);
            else mg.add_(g.to(ScalarType.Float32));
            g.zero_();
        }
    }

    public void Dispose()
    {
        if (IsCopy) Model.Dispose();
    }
}
