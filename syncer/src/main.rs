fn main() -> anyhow::Result<()> {
    anyhow::bail!("sv-syncer is not implemented yet")
}
