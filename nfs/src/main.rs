fn main() -> anyhow::Result<()> {
    anyhow::bail!("sv-nfs is not implemented yet")
}
