namespace OrtFlash.Verification;

/// <summary>
/// SplitMix64: a tiny generator whose sequence is fixed by this code alone, so generated inputs stay the same
/// across .NET versions (System.Random's seeded sequence is not a documented contract).
/// </summary>
internal struct DeterministicRandom
{
    private ulong state;

    public DeterministicRandom(ulong seed) => state = seed;

    /// <summary>A stream for one input: the seed mixed with a stable hash of the input's name, so adding or
    /// reordering inputs leaves the values of the others unchanged.</summary>
    public static DeterministicRandom ForInput(ulong seed, string inputName)
    {
        // FNV-1a: string.GetHashCode is randomised per process.
        ulong hash = 14695981039346656037UL;
        foreach (char c in inputName)
        {
            hash = (hash ^ c) * 1099511628211UL;
        }

        return new DeterministicRandom(seed ^ hash);
    }

    public ulong NextUInt64()
    {
        ulong z = state += 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }

    /// <summary>Uniform in [0, 1) with 53 random bits.</summary>
    public double NextDouble() => (NextUInt64() >> 11) * (1.0 / (1UL << 53));

    /// <summary>Uniform in [-1, 1).</summary>
    public float NextSigned() => (float)(NextDouble() * 2.0 - 1.0);

    /// <summary>Uniform integer in [0, bound).</summary>
    public long NextBelow(long bound) => (long)(NextDouble() * bound);
}
